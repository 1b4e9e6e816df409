"""Building engines with the real edgedet/backends/tensorrt through the TensorRT double
(tests/support/fake_tensorrt), per version line: precision switches, INT8 calibration and its cache,
explicit Q/DQ, float-layer overrides, the DLA, the timing cache and progress reporting."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.config import TensorRTBackend
from edgedet.backends.tensorrt import build_engine
from edgedet.backends.tensorrt.cache import EngineCache
from edgedet.errors import BackendError
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.types import InputSpec
from tests.support.fake_tensorrt import FakeDevice, Installed, install
from tests.support.fake_tensorrt.models import broken_model, pooled_model

REPO = Path(__file__).resolve().parent.parent
SPEC = InputSpec(name="images", width=416, height=416)  # YOLOX: BGR 0..255, top-left letterbox

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")


@pytest.fixture
def calib_dir(shared_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    for src in sorted((shared_dir / "data" / "coco-val2017-calib").glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    return folder


def _build(cfg: TensorRTBackend, state: Path, model: Path = DEMO_MODEL, **kw: object) -> Path:
    return build_engine(model, cfg, state, input_spec=SPEC, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "precision", "flags"),
    [
        ("8.5.2", "fp16", ["FP16"]),
        ("10.3.0", "fp32", []),
        ("10.3.0", "fp16", ["FP16"]),
        ("10.13.3", "fp16", ["FP16"]),
    ],
)
def test_weakly_typed_builds_set_only_the_flags_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, precision: str, flags: List[str]
) -> None:
    fake = install(monkeypatch, version)
    path = _build(TensorRTBackend(type="tensorrt", precision=precision), tmp_path)
    assert path.is_file() and f"trt{version}" in path.name
    assert fake.world.builds[-1]["flags"] == flags
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"]["trt_version"] == version and meta["explicit_int8"] is False


def test_trt11_builds_the_fp16_onnx_without_precision_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = install(monkeypatch, "11.4.0")
    fp16 = pooled_model(tmp_path / "m_fp16.onnx", batch=1)
    cfg = TensorRTBackend(type="tensorrt", precision="fp16", fp16_model=str(fp16))
    path = _build(cfg, tmp_path / "state")
    assert fake.world.builds[-1]["flags"] == []
    assert json.loads(path.with_suffix(".json").read_text())["onnx"] == str(fp16)
    assert not hasattr(fake.module.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(fake.module, "IInt8EntropyCalibrator2")


def test_trt11_int8_needs_qdq_nodes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, "11.4.0")
    plain = pooled_model(tmp_path / "plain.onnx", batch=1)
    with pytest.raises(BackendError, match="holds no QuantizeLinear/DequantizeLinear"):
        _build(TensorRTBackend(type="tensorrt", precision="int8", qdq_model=str(plain)), tmp_path / "s")
    qdq = pooled_model(tmp_path / "qdq.onnx", batch=1, qdq=True)
    path = _build(TensorRTBackend(type="tensorrt", precision="int8", qdq_model=str(qdq)), tmp_path / "s")
    assert json.loads(path.with_suffix(".json").read_text())["explicit_int8"] is True


def test_explicit_qdq_on_trt10_needs_no_calibration(trt10: Installed, tmp_path: Path) -> None:
    qdq = pooled_model(tmp_path / "qdq.onnx", batch=1, qdq=True)
    cfg = TensorRTBackend(type="tensorrt", precision="best", qdq_model=str(qdq))
    path = _build(cfg, tmp_path / "state")
    build = trt10.world.builds[-1]
    assert build["flags"] == ["FP16", "INT8"] and build["calibration"] is None and build["explicit_int8"]
    assert json.loads(path.with_suffix(".json").read_text())["calibrated_images"] == 0


def test_int8_calibration_reads_the_preprocessed_images_and_caches_the_scales(
    trt10: Installed, tmp_path: Path, calib_dir: Path
) -> None:
    cfg = TensorRTBackend(type="tensorrt", precision="int8", calibration=str(calib_dir), calibration_images=4)
    lines: List[str] = []
    path = _build(cfg, tmp_path / "state", progress=lines.append)
    build = trt10.world.builds[-1]
    assert build["calibration"]["from_cache"] is False and build["calibration"]["batches"] == 4
    # what TensorRT read from the device pointers is exactly the inference preprocessing of the images
    pre = CpuPreprocessor(SPEC)
    images = [cv2.imread(str(p)) for p in sorted(calib_dir.glob("*.jpg"))]
    tensors = []
    for image in images:
        out = pre.allocate()
        pre.run(image, out)
        tensors.append(np.asarray(out, dtype=np.float64))
    lo, hi, mean = trt10.world.calibration_reads[-1]
    assert (lo, hi) == (min(t.min() for t in tensors), max(t.max() for t in tensors))
    assert mean == pytest.approx(float(np.mean([t.mean() for t in tensors])), rel=1e-9)
    assert json.loads(path.with_suffix(".json").read_text())["calibrated_images"] == 4
    assert any("calibration cache written" in line for line in lines)
    # a rebuild (another precision switch, same data) takes the scales from the cache
    reads = len(trt10.world.calibration_reads)
    _build(cfg, tmp_path / "state", force=True, progress=lines.append)
    assert trt10.world.builds[-1]["calibration"]["from_cache"] is True
    assert len(trt10.world.calibration_reads) == reads
    assert any("using the calibration cache" in line for line in lines)


def test_calibrating_a_dynamic_model_uses_a_calibration_profile(
    trt10: Installed, tmp_path: Path, calib_dir: Path
) -> None:
    model = pooled_model(tmp_path / "dyn.onnx", size=32)
    spec = InputSpec(name="images", width=32, height=32)
    cfg = TensorRTBackend(
        type="tensorrt", precision="int8", calibration=str(calib_dir), calibration_images=4, max_batch=2
    )
    build_engine(model, cfg, tmp_path / "state", input_spec=spec)
    assert trt10.world.builds[-1]["calibration"]["batches"] == 2  # batches of two images


def test_calibration_errors_name_what_is_missing(trt10: Installed, tmp_path: Path, calib_dir: Path) -> None:
    with pytest.raises(BackendError, match=r"set backend.calibration"):
        _build(TensorRTBackend(type="tensorrt", precision="int8"), tmp_path / "a")
    cfg = TensorRTBackend(type="tensorrt", precision="int8", calibration=str(calib_dir), calibration_images=4)
    with pytest.raises(BackendError, match="input_spec"):
        build_engine(DEMO_MODEL, cfg, tmp_path / "b")
    wrong = InputSpec(name="images", width=320, height=320)
    with pytest.raises(BackendError, match="320x320 does not match"):
        build_engine(DEMO_MODEL, cfg, tmp_path / "c", input_spec=wrong)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = TensorRTBackend(type="tensorrt", precision="int8", calibration=str(empty))
    with pytest.raises(
        BackendError,
        match=r"INT8 calibration failed: bad calibration data .*no usable image left.*broken\.jpg",
    ):
        _build(cfg, tmp_path / "d")


def test_int8_without_calibration_on_8_5_uses_the_calibrator_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, calib_dir: Path
) -> None:
    fake = install(monkeypatch, "8.5.2")
    cfg = TensorRTBackend(type="tensorrt", precision="best", calibration=str(calib_dir), calibration_images=4)
    _build(cfg, tmp_path)
    assert fake.world.builds[-1]["flags"] == ["FP16", "INT8"]
    assert not hasattr(fake.module, "IProgressMonitor")


def test_float_layer_list_pins_those_layers(
    trt10: Installed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qdq = pooled_model(tmp_path / "qdq.onnx", batch=1, qdq=True)
    layers = tmp_path / "float_layers.txt"
    layers.write_text("/head/pool fp32\n/input/QuantizeLinear\n/not/in/this/model\n")
    cfg = TensorRTBackend(type="tensorrt", precision="int8", qdq_model=str(qdq), float_layers=str(layers))
    with caplog.at_level(logging.WARNING):
        path = _build(cfg, tmp_path / "state")
    build = trt10.world.builds[-1]
    assert build["layer_precisions"] == {"/head/pool": int(trt10.module.float32)}  # Q/DQ layers are skipped
    assert "OBEY_PRECISION_CONSTRAINTS" in build["flags"]
    assert "not in this network: /not/in/this/model" in caplog.text
    assert json.loads(path.with_suffix(".json").read_text())["float_layers_applied"] == 1
    layers.write_text("/head/pool fp16\n")
    _build(cfg, tmp_path / "state")
    assert trt10.world.builds[-1]["layer_precisions"] == {"/head/pool": int(trt10.module.float16)}
    assert "FP16" in trt10.world.builds[-1]["flags"]  # an fp16 layer turns FP16 on


def test_dla_with_gpu_fallback_and_without(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch, "10.3.0", FakeDevice("Orin", (8, 7), dla_cores=2))
    lines: List[str] = []
    path = _build(TensorRTBackend(type="tensorrt", dla_core=1), tmp_path, progress=lines.append)
    assert "dla1" in path.name and fake.world.builds[-1]["dla_core"] == 1
    assert "GPU_FALLBACK" in fake.world.builds[-1]["flags"]
    assert any(line.startswith("  DLA core 1:") and "on the GPU" in line for line in lines)
    with pytest.raises(BackendError, match=r"cannot run on the DLA .* gpu_fallback is off"):
        _build(TensorRTBackend(type="tensorrt", dla_core=0, gpu_fallback=False), tmp_path)
    with pytest.raises(BackendError, match="DLA core 2 requested, but this device has 2"):
        _build(TensorRTBackend(type="tensorrt", dla_core=2), tmp_path)


def test_a_gpu_without_dla_rejects_dla_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, "10.3.0", FakeDevice("NVIDIA H200", (9, 0), dla_cores=0))
    with pytest.raises(BackendError, match="has 0 DLA core"):
        _build(TensorRTBackend(type="tensorrt", dla_core=0), tmp_path)


def test_trt11_before_11_4_has_no_dla(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, "11.0.0")
    fp16 = pooled_model(tmp_path / "m_fp16.onnx", batch=1)
    with pytest.raises(BackendError, match=r"came with TensorRT 11\.4"):
        _build(TensorRTBackend(type="tensorrt", fp16_model=str(fp16), dla_core=0), tmp_path / "s")


def test_the_timing_cache_is_reused_by_the_next_build(
    trt10: Installed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = TensorRTBackend(type="tensorrt", precision="fp16")
    _build(cfg, tmp_path)
    first = trt10.world.builds[-1]
    assert first["timing_hits"] == 0
    timing = EngineCache(tmp_path).timing_cache_path("10.3.0", "Orin", "8.7")
    assert timing.is_file()
    _build(cfg, tmp_path, force=True)
    assert trt10.world.builds[-1]["timing_hits"] == first["layers"]
    timing.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        _build(cfg, tmp_path, force=True)
    assert "ignoring the timing cache" in caplog.text and trt10.world.builds[-1]["timing_hits"] == 0
    _build(cfg.model_copy(update={"timing_cache": False}), tmp_path, force=True)
    assert trt10.world.builds[-1]["timing_hits"] == 0


def test_a_timing_cache_from_another_gpu_is_not_used(
    trt10: Installed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = TensorRTBackend(type="tensorrt", precision="fp16")
    _build(cfg, tmp_path)
    timing = EngineCache(tmp_path).timing_cache_path("10.3.0", "Orin", "8.7")
    other = EngineCache(tmp_path).timing_cache_path("10.3.0", "Xavier", "7.2")
    shutil.copy(timing, other)  # e.g. a state directory copied between devices
    trt10.switch(monkeypatch, device=FakeDevice("Xavier", (7, 2)))
    with caplog.at_level(logging.WARNING):
        _build(cfg, tmp_path)
    assert "made by another TensorRT or GPU" in caplog.text
    assert trt10.world.builds[-1]["timing_hits"] == 0


def test_build_progress_reaches_the_caller(trt10: Installed, tmp_path: Path) -> None:
    lines: List[str] = []
    _build(TensorRTBackend(type="tensorrt"), tmp_path, progress=lines.append)
    assert lines[0].startswith("building the fp16 engine for yolox_nano.onnx with TensorRT 10.3.0 on Orin")
    assert any(line.startswith("  Building engine (") for line in lines)  # IProgressMonitor phase
    assert lines[-1].startswith("engine written:")


def test_a_model_tensorrt_cannot_parse_is_a_clear_error(trt10: Installed, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + b"garbage" * 10)
    with pytest.raises(BackendError, match=r"garbage\.onnx is not an ONNX model"):
        _build(TensorRTBackend(type="tensorrt"), tmp_path / "s", model=garbage)
    bad = broken_model(tmp_path / "bad.onnx")  # declares its I/O, but a node reads a missing tensor
    with pytest.raises(BackendError, match=r"TensorRT cannot parse .*bad\.onnx:\n  In node"):
        _build(TensorRTBackend(type="tensorrt"), tmp_path / "s", model=bad)


def test_a_failed_build_is_a_clear_error(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "m.onnx", batch=1)
    # a DLA engine needs FP16/INT8; TensorRT refuses the build and edgedet says so
    cfg = TensorRTBackend(type="tensorrt", precision="fp16", dla_core=0)
    monkey_flags = cfg.model_copy(update={"precision": "fp32"})  # what the config validator forbids
    with pytest.raises(BackendError, match="could not build the engine"):
        build_engine(model, monkey_flags, tmp_path / "s", input_spec=SPEC)
