"""Running engines with the real edgedet/backends/tensorrt through the TensorRT double: outputs equal
ONNX Runtime's on every version line, batches across cameras (host frames and device tensors), slots in
flight, output buffers sized from the real shapes, profile selection errors, and releasing CUDA
objects with the context pushed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.config import TensorRTBackend
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.backends.tensorrt import TrtBackend, build_engine, open_tensorrt_backend
from edgedet.backends.tensorrt.gpu_slots import Binding, GpuSlot, SlotPipeline
from edgedet.backends.tensorrt.slots import SlotOrderError, SlotsFull
from edgedet.errors import BackendError
from edgedet.preprocess.cuda import DeviceTensor
from edgedet.types import InputSpec
from tests.support.fake_tensorrt import Installed, install
from tests.support.fake_tensorrt import bindings as fake_bindings
from tests.support.fake_tensorrt.models import nonzero_model, pooled_model
from tests.support.onnx_graphs import save_constant_model

REPO = Path(__file__).resolve().parent.parent
SPEC = InputSpec(name="images", width=416, height=416)
SMALL = InputSpec(name="images", width=32, height=32)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _open(model: Path, state: Path, spec: InputSpec = SMALL, **cfg: object) -> TrtBackend:
    config = TensorRTBackend(type="tensorrt", **cfg)  # type: ignore[arg-type]
    return open_tensorrt_backend(config, model, state, input_spec=spec)


def _reference(model: Path, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    backend = OnnxRuntimeBackend(model, threads=1)
    try:
        return backend.infer(feeds)
    finally:
        backend.close()


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize(
    ("version", "precision"), [("8.5.2", "fp16"), ("10.3.0", "int8"), ("11.4.0", "fp32")]
)
def test_demo_model_outputs_equal_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, precision: str
) -> None:
    fake = install(monkeypatch, version)
    extra = (
        {"qdq_model": str(pooled_model(tmp_path / "q.onnx", batch=1, qdq=True))}
        if precision == "int8"
        else {}
    )
    model = DEMO_MODEL if precision != "int8" else Path(extra["qdq_model"])
    spec = SPEC if model == DEMO_MODEL else SMALL
    backend = _open(model, tmp_path / "state", spec, precision=precision, **extra)
    try:
        x = _images(1, spec.width)
        out = backend.infer({"images": x})
        ref = _reference(model, {"images": x})
        for name, value in ref.items():
            np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-4)
        assert backend.metadata["tensorrt"] == version and backend.name == "tensorrt"
        assert [o.name for o in backend.outputs] == list(ref)
        assert set(backend.last_timings) == {"upload_ms", "infer_ms", "download_ms", "wait_ms"}
        assert fake.world.executions == 1
    finally:
        backend.close()
    assert fake.runtime.leaks == []


def test_host_frames_of_two_cameras_are_one_batch(trt10: Installed, tmp_path: Path) -> None:
    """Defect 1: with preprocess cpu and max_batch 2 the inference worker passes a list of numpy arrays
    (TrtBackend.accepts_device_tensors is always True); the slots rejected it and the daemon exited."""
    model = pooled_model(tmp_path / "dyn.onnx")
    backend = _open(model, tmp_path / "state", max_batch=2)
    try:
        a, b = _images(1, seed=1), _images(1, seed=2)
        out = backend.collect(backend.submit({"images": [a, b]}))
        ref = _reference(model, {"images": np.concatenate([a, b])})
        np.testing.assert_allclose(out["output"], ref["output"], rtol=1e-6)
        assert out["output"].shape == (2, 3)
    finally:
        backend.close()


def test_device_tensors_of_two_cameras_are_copied_into_one_batch(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "dyn.onnx")
    backend = _open(model, tmp_path / "state", max_batch=2)
    runtime = trt10.runtime
    tensors = [DeviceTensor(runtime, (1, 3, 32, 32), "float32") for _ in range(2)]
    try:
        host = [_images(1, seed=3), _images(1, seed=4)]
        with runtime.activate():
            for t, h in zip(tensors, host):
                runtime.htod_async(t.device_ptr, h, None)
        out = backend.infer({"images": tensors})
        np.testing.assert_allclose(
            out["output"], _reference(model, {"images": np.concatenate(host)})["output"]
        )
        single = backend.infer({"images": tensors[1]})  # one tensor: bound in place, no copy
        np.testing.assert_allclose(single["output"], _reference(model, {"images": host[1]})["output"])
        with pytest.raises(BackendError, match="device tensor of 24576 bytes, expected 12288"):
            wide = DeviceTensor(runtime, (1, 3, 32, 64), "float32")
            backend.infer({"images": wide})
    finally:
        backend.close()


def test_a_batch_larger_than_max_batch_is_split(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "dyn.onnx")
    backend = _open(model, tmp_path / "state", max_batch=2)
    try:
        x = _images(5)
        out = backend.infer({"images": x})
        np.testing.assert_allclose(out["output"], _reference(model, {"images": x})["output"], rtol=1e-6)
        assert trt10.world.executions == 3
    finally:
        backend.close()


def test_slots_in_flight_come_back_in_order(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "dyn.onnx")
    backend = _open(model, tmp_path / "state", max_batch=2, slots=2)
    try:
        frames = [_images(1, seed=i) for i in range(3)]
        first = backend.submit({"images": frames[0]})
        second = backend.submit({"images": frames[1]})
        with pytest.raises(SlotsFull):
            backend.submit({"images": frames[2]})
        with pytest.raises(SlotOrderError, match="submission order"):
            backend.collect(second)
        with pytest.raises(BackendError, match="collect them first"):
            backend.infer({"images": frames[2]})
        for handle, frame in ((first, frames[0]), (second, frames[1])):
            np.testing.assert_allclose(
                backend.collect(handle)["output"], _reference(model, {"images": frame})["output"]
            )
    finally:
        backend.close()


def test_feeds_that_do_not_fit_are_refused_with_the_reason(trt10: Installed, tmp_path: Path) -> None:
    model = pooled_model(tmp_path / "dyn.onnx")
    backend = _open(model, tmp_path / "state", max_batch=2)
    try:
        with pytest.raises(BackendError, match=r"has shape \[1, 3, 16, 16\]; expected \[N, 3, 32, 32\]"):
            backend.submit({"images": _images(1, 16)})
        with pytest.raises(BackendError, match="missing input 'images'"):
            backend.submit({"other": _images(1)})
        with pytest.raises(BackendError, match=r"outside 1..2"):
            backend.submit({"images": [_images(2), _images(1)]})
        with pytest.raises(BackendError, match="expected a numpy array or device tensor"):
            backend.submit({"images": "frame"})
    finally:
        backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer({"images": _images(1)})
    backend.close()  # twice is fine


def test_an_output_without_batch_axis_gets_a_buffer_of_its_real_size(
    trt10: Installed, tmp_path: Path
) -> None:
    """Defect 3: a static batch-1 engine with a [100, 6] output got a 6-float buffer (dims[1:] x
    max_batch); the double refuses the out-of-bounds write, a GPU would corrupt memory."""
    dets = np.arange(600, dtype=np.float32).reshape(100, 6)
    model = save_constant_model(tmp_path / "nms.onnx", {"dets": dets}, input_shape=(1, 3, 32, 32))
    backend = _open(model, tmp_path / "state")
    try:
        np.testing.assert_array_equal(backend.infer({"images": _images(1)})["dets"], dets)
    finally:
        backend.close()
    dynamic = save_constant_model(tmp_path / "nms_dyn.onnx", {"dets": dets}, input_shape=(None, 3, 32, 32))
    with pytest.raises(
        BackendError, match=r"output dets has shape \[100, 6\], which does not start with the batch"
    ):
        _open(dynamic, tmp_path / "state", max_batch=2)


def test_a_data_dependent_output_shape_is_refused(trt10: Installed, tmp_path: Path) -> None:
    model = nonzero_model(tmp_path / "nz.onnx")
    with pytest.raises(BackendError, match="data-dependent shape"):
        _open(model, tmp_path / "state", spec=InputSpec(name="images", width=8, height=8))


def test_a_refused_optimization_profile_rebuilds_then_reports(
    trt10: Installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 4: set_optimization_profile_async raises RuntimeError (pyCore.cpp) instead of returning
    False, so the BackendError branch was dead and the error skipped the rebuild and the fallback."""
    model = pooled_model(tmp_path / "dyn.onnx")
    _open(model, tmp_path / "state", max_batch=2).close()  # cached, and the last good engine
    real = fake_bindings.IExecutionContext.set_optimization_profile_async
    failures = []

    def refuse_once(self: object, index: int, stream: int) -> bool:
        if not failures:
            failures.append(index)
            raise RuntimeError("Error in set optimization profile async.")
        return real(self, index, stream)  # type: ignore[arg-type]

    monkeypatch.setattr(fake_bindings.IExecutionContext, "set_optimization_profile_async", refuse_once)
    builds = len(trt10.world.builds)
    with caplog.at_level(logging.ERROR):
        backend = _open(model, tmp_path / "state", max_batch=2)
    backend.close()
    assert "cannot select optimization profile 1" in caplog.text and "rebuilding it" in caplog.text
    assert len(trt10.world.builds) == builds + 1

    def refuse(self: object, index: int, stream: int) -> bool:
        raise RuntimeError("Error in set optimization profile async.")

    monkeypatch.setattr(fake_bindings.IExecutionContext, "set_optimization_profile_async", refuse)
    with pytest.raises(BackendError, match="cannot select optimization profile 1"):
        _open(model, tmp_path / "state", max_batch=2)
    assert trt10.runtime.leaks == []


def test_an_engine_with_fewer_profiles_runs_fewer_slots(
    trt10: Installed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = pooled_model(tmp_path / "dyn.onnx")
    path = build_engine(
        model, TensorRTBackend(type="tensorrt", max_batch=2, slots=1), tmp_path, input_spec=SMALL
    )
    with caplog.at_level(logging.WARNING):
        backend = _open(model, tmp_path, engine=str(path), max_batch=2, slots=3)
    try:
        assert backend.slots == 1 and "using 1 slot(s) instead of 3" in caplog.text
    finally:
        backend.close()


def test_closing_releases_streams_and_events_with_the_context_pushed(
    trt10: Installed, tmp_path: Path
) -> None:
    """Defect 7: SlotPipeline.close freed the buffers inside activate() but dropped the slots (their
    streams and events) after it; from another thread pycuda then leaks them."""
    runtime = trt10.runtime
    b = Binding("x", (4,), "float32")

    def execute(slot: GpuSlot, batch: int, ins: Dict[str, int], outs: Dict[str, int]) -> None:
        runtime.dtod_async(outs["x"], ins["x"], b.item_bytes * batch, slot.stream)

    pipeline = SlotPipeline(runtime, [b], [b], 2, 2, execute)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(pipeline.run({"x": x})["x"], x)
    closer = threading.Thread(target=pipeline.close)
    closer.start()
    closer.join()
    assert runtime.leaks == []
    backend = _open(pooled_model(tmp_path / "dyn.onnx"), tmp_path / "state", max_batch=2)
    threads: List[threading.Thread] = [threading.Thread(target=backend.close)]
    threads[0].start()
    threads[0].join()
    assert runtime.leaks == []
