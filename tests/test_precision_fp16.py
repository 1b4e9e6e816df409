"""FP16 conversion of the real model: float16 weights, float32 inputs/outputs, runs in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.precision.calibration import load_calibration
from edgedet.precision.errors import PrecisionError
from edgedet.precision.fp16 import convert_fp16
from edgedet.precision.quantize import quantize

pytest.importorskip("onnxconverter_common", reason="pip install 'edgedet[quantize]' (onnxconverter-common)")


def test_fp16_model(tmp_path: Path) -> None:
    out = convert_fp16(DEMO_MODEL, tmp_path / "nano.fp16.onnx")
    model = onnx.load(str(out))
    f16 = onnx.TensorProto.FLOAT16
    f32 = onnx.TensorProto.FLOAT
    types = [i.data_type for i in model.graph.initializer]
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == f16 for w in weights)
    assert types.count(f16) > 0.9 * len([t for t in types if t in (f16, f32)])
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    assert out.stat().st_size < 0.6 * DEMO_MODEL.stat().st_size
    feed = next(load_calibration(DEMO_CLIP, DEMO_MODEL, limit=1).feeds())
    ref = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    half = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert half.dtype == np.float32 and half.shape == ref.shape
    # probabilities (obj, classes) agree closely; float16 rounding accumulates over ~110 convs
    diff = np.abs(half[..., 4:] - ref[..., 4:])
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.1


def test_fp16_refuses_int8_models(tmp_path: Path) -> None:
    calib = load_calibration(DEMO_CLIP, DEMO_MODEL, limit=2)
    qdq = quantize(DEMO_MODEL, calib, tmp_path / "q.onnx").path
    with pytest.raises(PrecisionError, match="INT8"):
        convert_fp16(qdq, tmp_path / "h.onnx")
