"""How the backend turns its config into an engine key and explains load failures (no TensorRT needed:
these are the decisions taken before and after the TensorRT calls)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.config import TensorRTBackend
from edgedet.backends.tensorrt.cache import EngineCache, describe_changes
from edgedet.backends.tensorrt.engine import deserialize_error
from edgedet.backends.tensorrt.request import prepare_request
from edgedet.backends.tensorrt.runtime import RuntimeIdentity, expand_path
from edgedet.errors import BackendError, ConfigError
from edgedet.types import InputSpec
from tests.support.onnx_graphs import save_constant_model

CLIP = DEMO_MODEL.parent / "demo_street.mp4"
ORIN_86 = RuntimeIdentity("8.6.2", "Orin", "8.7", "NVIDIA Jetson AGX Orin Developer Kit")
ORIN_103 = RuntimeIdentity("10.3.0", "Orin", "8.7", "NVIDIA Jetson AGX Orin Developer Kit")
SPEC = InputSpec(name="images", width=416, height=416)


def _key(cfg: TensorRTBackend, ident: RuntimeIdentity = ORIN_86, model: Path = DEMO_MODEL, spec=SPEC):  # type: ignore[no-untyped-def]
    return prepare_request(cfg, model, ident, expand_path, None, spec).key


def test_key_follows_config_model_and_runtime(tmp_path: Path) -> None:
    base = TensorRTBackend(type="tensorrt")
    key = _key(base)
    assert key.precision == "fp16" and key.batch_range == (1, 1, 1) and key.profiles == 0
    assert key == _key(TensorRTBackend(type="tensorrt", workspace_mb=2048))  # workspace: no rebuild
    assert describe_changes(key, _key(base, ORIN_103)) == ["TensorRT version: 8.6.2 -> 10.3.0"]
    assert describe_changes(key, _key(TensorRTBackend(type="tensorrt", max_batch=4)))[0].startswith(
        "batch range"
    )
    copy = tmp_path / "yolox_nano.onnx"
    data = bytearray(DEMO_MODEL.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    assert describe_changes(key, _key(base, model=copy))[0].startswith("model file")
    dla = _key(TensorRTBackend(type="tensorrt", dla_core=1))
    assert dla.dla_core == 1 and dla.profiles == 1


def test_int8_key_depends_on_calibration_data_and_float_layers(tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    layers = tmp_path / "float_layers.txt"
    layers.write_text("/backbone/stem/Conv\n")
    cfg = TensorRTBackend(type="tensorrt", precision="int8", calibration=str(tmp_path / "clip.mp4"))
    a = _key(cfg)
    assert a.options
    assert a != _key(cfg.model_copy(update={"calibration_images": 50}))
    b = _key(cfg.model_copy(update={"float_layers": str(layers)}))
    assert b != a
    layers.write_text("/backbone/stem/Conv fp32\n")
    assert _key(cfg.model_copy(update={"float_layers": str(layers)})) != b
    assert _key(cfg, spec=InputSpec(name="images", width=416, height=416, scale=1 / 255)) != a
    layers.write_text("/a int8\n")
    with pytest.raises(ConfigError, match=r"float_layers\.txt:1"):
        _key(cfg.model_copy(update={"float_layers": str(layers)}))


def test_plan_errors_surface_before_any_build(tmp_path: Path) -> None:
    trt11 = RuntimeIdentity("11.4.1", "Orin", "8.7", "")
    with pytest.raises(BackendError, match="FP16 ONNX"):
        _key(TensorRTBackend(type="tensorrt", precision="fp16"), trt11)
    with pytest.raises(BackendError, match="does not exist"):
        _key(TensorRTBackend(type="tensorrt", precision="int8", qdq_model=str(tmp_path / "missing.onnx")))
    key = _key(TensorRTBackend(type="tensorrt", precision="int8", qdq_model=str(DEMO_MODEL)), trt11)
    assert key.trt_version == "11.4.1"


def test_load_failure_names_both_versions(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = _key(TensorRTBackend(type="tensorrt"))
    path = cache.store(key, "yolox_nano.onnx", b"engine")
    message = deserialize_error(path, ORIN_103)
    assert "built with TensorRT 8.6.2 on Orin (sm_87)" in message
    assert "this is TensorRT 10.3.0 on Orin (sm_87)" in message
    assert "corrupt" in deserialize_error(path, ORIN_86)  # same versions: the file itself is bad
    bare = tmp_path / "prebuilt.engine"
    bare.write_bytes(b"x")
    assert "another TensorRT version or for another GPU" in deserialize_error(bare, ORIN_103)


def test_slots_change_the_key_only_of_a_dynamic_model(tmp_path: Path) -> None:
    """Defect 5: a static model gets no optimization profiles, so its slots must not force a rebuild."""
    static = _key(TensorRTBackend(type="tensorrt", slots=2))
    assert static == _key(TensorRTBackend(type="tensorrt", slots=3))
    dynamic_model = save_constant_model(
        tmp_path / "dyn.onnx", {"output": np.zeros((1, 10, 6), np.float32)}, input_shape=(None, 3, 416, 416)
    )
    two = _key(TensorRTBackend(type="tensorrt", slots=2), model=dynamic_model)
    three = _key(TensorRTBackend(type="tensorrt", slots=3), model=dynamic_model)
    assert (two.profiles, three.profiles) == (2, 3)
    assert describe_changes(two, three) == ["optimization profiles: 2 -> 3"]


def test_calibrated_key_needs_the_preprocessing(tmp_path: Path) -> None:
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    cfg = TensorRTBackend(type="tensorrt", precision="int8", calibration=str(tmp_path / "clip.mp4"))
    with pytest.raises(BackendError, match="input_spec"):
        _key(cfg, spec=None)
