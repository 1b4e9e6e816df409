"""Which engine the daemon runs, through the real edgedet/backends/tensorrt and the TensorRT double: the
cached one when its key matches, a rebuild when anything in the key changed, the last good engine when
a build fails, clear errors for engines of another TensorRT or GPU; and the same key from
`edgedet build-engine`, the daemon and the Jetson self-test."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgedet.app import load_model_stage
from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.backends.config import TensorRTBackend
from edgedet.backends.tensorrt import TrtBackend, open_tensorrt_backend
from edgedet.backends.tensorrt.cache import EngineCache
from edgedet.commands.engine import run_build_engine
from edgedet.config import load_config
from edgedet.errors import BackendError
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import resolve_input_spec
from edgedet.types import InputSpec
from tests.support.fake_tensorrt import FakeDevice, Installed, install
from tests.support.fake_tensorrt.models import broken_model, pooled_model

REPO = Path(__file__).resolve().parent.parent
SPEC = InputSpec(name="images", width=416, height=416)
SMALL = InputSpec(name="images", width=32, height=32)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _open(model: Path, state: Path, spec: InputSpec = SPEC, **cfg: Any) -> TrtBackend:
    return open_tensorrt_backend(TensorRTBackend(type="tensorrt", **cfg), model, state, input_spec=spec)


def test_a_matching_cached_engine_is_loaded_without_a_build(trt10: Installed, tmp_path: Path) -> None:
    _open(DEMO_MODEL, tmp_path).close()
    assert len(trt10.world.builds) == 1
    _open(DEMO_MODEL, tmp_path).close()
    _open(DEMO_MODEL, tmp_path, slots=3).close()  # static model: slots are not in the key
    assert len(trt10.world.builds) == 1
    _open(DEMO_MODEL, tmp_path, precision="fp32").close()
    assert len(trt10.world.builds) == 2


def test_a_changed_model_is_rebuilt_with_the_reason(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "m.onnx", batch=1)
    lines: list = []
    open_tensorrt_backend(TensorRTBackend(type="tensorrt"), model, tmp_path, input_spec=SMALL).close()
    pooled_model(model, batch=1, size=16)  # same name, new weights and input size
    spec16 = InputSpec(name="images", width=16, height=16)
    cfg = TensorRTBackend(type="tensorrt")
    open_tensorrt_backend(cfg, model, tmp_path, input_spec=spec16, progress=lines.append).close()
    assert any(
        line.startswith("rebuilding the fp16 engine for m.onnx: model file (sha256)") for line in lines
    )


def test_a_failed_build_falls_back_to_the_last_good_engine(
    trt10: Installed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(DEMO_MODEL, model)
    _open(model, tmp_path / "state").close()
    broken_model(model)  # an update that TensorRT cannot parse
    with caplog.at_level(logging.ERROR):
        backend = _open(model, tmp_path / "state")
    try:
        assert "building the engine failed: TensorRT cannot parse" in caplog.text
        assert "Running the last good engine yolox_nano" not in caplog.text  # named after m.onnx
        assert "Running the last good engine m-fp16" in caplog.text
        assert backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)})["output"].shape == (
            1,
            3549,
            85,
        )
    finally:
        backend.close()
    with pytest.raises(BackendError, match="TensorRT cannot parse"):
        _open(model, tmp_path / "fresh-state")  # nothing to fall back to


def test_no_build_on_start_says_what_to_run(trt10: Installed, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"backend.build_on_start is off: run `edgedet build-engine"):
        _open(DEMO_MODEL, tmp_path, build_on_start=False)


def test_a_prebuilt_engine_of_another_tensorrt_or_gpu_names_both(
    trt10: Installed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _open(DEMO_MODEL, tmp_path).close()
    engine = EngineCache(tmp_path).engines_for("yolox_nano.onnx")[0]
    with pytest.raises(BackendError, match="does not exist"):
        _open(DEMO_MODEL, tmp_path, engine=str(tmp_path / "missing.engine"))
    trt10.switch(monkeypatch, version="8.6.2")
    with caplog.at_level(logging.ERROR, logger="edgedet.tensorrt"), pytest.raises(
        BackendError,
        match=r"was built with TensorRT 10\.3\.0 on Orin \(sm_87\); this is TensorRT 8\.6\.2",
    ):
        _open(DEMO_MODEL, tmp_path, engine=str(engine))
    assert "not compatible with this version of TensorRT" in caplog.text  # TensorRT's own log line
    trt10.switch(monkeypatch, version="10.3.0", device=FakeDevice("NVIDIA H200", (9, 0), 0))
    with pytest.raises(BackendError, match=r"this is TensorRT 10.3.0 on NVIDIA H200"):
        _open(DEMO_MODEL, tmp_path, engine=str(engine))
    alien = tmp_path / "alien.engine"
    alien.write_bytes(b"not an engine at all")
    with pytest.raises(BackendError, match="another TensorRT version or for another GPU, or it is corrupt"):
        _open(DEMO_MODEL, tmp_path, engine=str(alien))


def test_a_corrupt_cached_engine_is_rebuilt(
    trt10: Installed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _open(DEMO_MODEL, tmp_path).close()
    engine = EngineCache(tmp_path).engines_for("yolox_nano.onnx")[0]
    engine.write_bytes(b"\x00" * 64)  # e.g. a disk error
    with caplog.at_level(logging.ERROR):
        _open(DEMO_MODEL, tmp_path).close()
    assert "corrupt?" in caplog.text and "rebuilding it" in caplog.text
    assert len(trt10.world.builds) == 2


def test_dla_engines_load_on_the_dla_core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch, "10.3.0", FakeDevice("Orin", (8, 7), dla_cores=2))
    backend = _open(DEMO_MODEL, tmp_path, dla_core=1, precision="fp16")
    backend.close()
    assert fake.world.builds[-1]["dla_core"] == 1


def _write_config(path: Path, state: Path, model: Path, **model_cfg: Any) -> Path:
    config = {
        "version": 1,
        "state_dir": str(state),
        "model": {"path": str(model), **model_cfg},
        "backend": {
            "type": "tensorrt",
            "precision": "int8",
            "calibration": str(DEMO_CLIP),
            "calibration_images": 4,
        },
        "cameras": [{"name": "demo", "source": {"type": "file", "path": str(DEMO_CLIP)}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _build_args(config: Path) -> argparse.Namespace:
    return argparse.Namespace(
        config=config, model=None, precision=None, calibration=None, float_layers=None, state_dir=None,
        max_batch=None, dla_core=None, force=False,
    )  # fmt: skip


def test_build_engine_daemon_and_selftest_share_one_key_that_holds_the_preprocessing(
    trt10: Installed, tmp_path: Path
) -> None:
    """Defect 2: build-engine and the daemon passed a resolver callable, so the preprocessing never
    entered the key: a new mean/std reused an INT8 engine calibrated for the old one."""
    pytest.importorskip("cv2")
    state = tmp_path / "state"
    config = _write_config(tmp_path / "edgedet.yaml", state, DEMO_MODEL)
    assert run_build_engine(_build_args(config)) == 0
    assert len(trt10.world.builds) == 1
    stage = load_model_stage(load_config(config))  # the daemon's path: finds that engine
    stage.close()
    assert len(trt10.world.builds) == 1
    # the self-test resolves the spec exactly like the daemon
    spec = importlib.util.spec_from_file_location("jetson_selftest", REPO / "tools" / "jetson_selftest.py")
    assert spec is not None and spec.loader is not None
    selftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(selftest)
    assert selftest.model_spec(DEMO_MODEL) == resolve_input_spec(
        ModelConfig(path=str(DEMO_MODEL)), DEMO_MODEL
    )
    # another normalisation: the calibration no longer holds, so the engine is rebuilt
    changed = _write_config(tmp_path / "changed.yaml", state, DEMO_MODEL, mean=[1.0, 2.0, 3.0])
    load_model_stage(load_config(changed)).close()
    assert len(trt10.world.builds) == 2
