"""Which ONNX is parsed and which precision switches are set, for TensorRT 8.5/10 and 11."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedet.backends.tensorrt.plan import plan_build, reported_precision
from edgedet.errors import BackendError

MODEL, QDQ, FP16 = Path("m.onnx"), Path("m_qdq.onnx"), Path("m_fp16.onnx")


@pytest.mark.parametrize("major", [8, 10])
def test_weakly_typed_versions_use_flags(major: int) -> None:
    p = plan_build("fp32", major, MODEL)
    assert (p.onnx, p.fp16_flag, p.int8_flag, p.may_calibrate) == (MODEL, False, False, False)
    p = plan_build("fp16", major, MODEL, fp16_model=FP16)
    assert (p.onnx, p.fp16_flag, p.int8_flag) == (MODEL, True, False)
    assert any("only used on TensorRT 11" in n for n in p.notes)
    p = plan_build("int8", major, MODEL)
    assert (p.onnx, p.fp16_flag, p.int8_flag, p.may_calibrate, p.needs_qdq) == (
        MODEL,
        False,
        True,
        True,
        False,
    )
    p = plan_build("best", major, MODEL, qdq_model=QDQ, has_float_layers=True)
    assert (p.onnx, p.fp16_flag, p.int8_flag, p.may_calibrate) == (QDQ, True, True, False)
    assert p.layer_overrides and not p.strongly_typed
    assert not plan_build("fp32", major, MODEL, has_float_layers=True).layer_overrides
    p = plan_build("fp16", major, MODEL, qdq_model=QDQ)
    assert p.onnx == MODEL and p.notes


def test_tensorrt_11_is_strongly_typed() -> None:
    p = plan_build("fp32", 11, MODEL)
    assert p.strongly_typed and not (p.fp16_flag or p.int8_flag)
    p = plan_build("fp16", 11, MODEL, fp16_model=FP16)
    assert p.onnx == FP16 and not p.fp16_flag
    with pytest.raises(BackendError, match="FP16 ONNX"):
        plan_build("fp16", 11, MODEL)
    p = plan_build("int8", 11, MODEL, qdq_model=QDQ, has_float_layers=True)
    assert p.onnx == QDQ and p.needs_qdq and not p.may_calibrate and not p.layer_overrides
    assert any("float_layers is ignored" in n for n in p.notes)
    p = plan_build("int8", 11, MODEL)  # model.path itself must then be a Q/DQ model
    assert p.onnx == MODEL and p.needs_qdq
    assert plan_build("best", 11, MODEL, qdq_model=QDQ, fp16_model=FP16).onnx == QDQ
    assert plan_build("best", 11, MODEL, fp16_model=FP16).onnx == FP16
    with pytest.raises(BackendError, match="best"):
        plan_build("best", 11, MODEL)
    with pytest.raises(BackendError, match="unknown precision"):
        plan_build("int4", 10, MODEL)


def test_reported_precision() -> None:
    assert reported_precision("fp16", False) == "fp16"
    assert reported_precision("int8", False) == "int8"
    assert reported_precision("int8", True) == "mixed"
    assert reported_precision("best", False) == "mixed"


def test_trt11_before_11_4_refuses_the_dla() -> None:
    with pytest.raises(BackendError, match=r"11\.4"):
        plan_build("fp16", 11, MODEL, fp16_model=FP16, trt_minor=0, dla_core=0)
    p = plan_build("fp16", 11, MODEL, fp16_model=FP16, trt_minor=4, dla_core=0)
    assert p.onnx == FP16


def test_trt11_best_with_qdq_says_the_fp16_model_is_not_used() -> None:
    p = plan_build("best", 11, MODEL, qdq_model=QDQ, fp16_model=FP16)
    assert p.onnx == QDQ
    assert any("fp16_model is not used" in n for n in p.notes)
