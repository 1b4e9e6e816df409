"""The pipelined GPU slots (streams, pinned buffers, events) with a real CUDA kernel standing in for the
TensorRT execute step: everything the TensorRT backend does around execute_async_v3."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pytest

from edgedet.backends.tensorrt.gpu_slots import Binding, GpuSlot, SlotPipeline
from edgedet.backends.tensorrt.slots import SlotHandle, SlotOrderError, SlotsFull

pytestmark = pytest.mark.gpu

AFFINE = r"""
extern "C" __global__ void affine(const float* x, float* y, int n, float a, float b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * a + b;
}
"""
ITEM = (3, 64, 80)


def _pipeline(
    runtime: object, slots: int = 2, max_batch: int = 4, calls: Optional[List[int]] = None
) -> SlotPipeline:
    with runtime.activate():  # type: ignore[attr-defined]
        kernel = runtime.compile(AFFINE, "affine", "PPiff")  # type: ignore[attr-defined]

    def execute(slot: GpuSlot, batch: int, ins: Dict[str, int], outs: Dict[str, int]) -> None:
        n = batch * int(np.prod(ITEM))
        kernel.launch(((n + 255) // 256, 1, 1), (256, 1, 1), slot.stream, [ins["x"], outs["y"], n, 2.0, 1.0])
        if calls is not None:
            calls.append(slot.index)

    return SlotPipeline(
        runtime,  # type: ignore[arg-type]
        [Binding("x", ITEM, "float32")],
        [Binding("y", ITEM, "float32")],
        slots=slots,
        max_batch=max_batch,
        execute=execute,
    )


def test_host_arrays_round_trip_with_timings(cuda_runtime: object) -> None:
    calls: List[int] = []
    pipe = _pipeline(cuda_runtime, slots=3, calls=calls)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((b, *ITEM)).astype(np.float32) for b in (1, 4, 2, 3, 1, 4)]
    handles: List[SlotHandle] = []
    outputs = []
    for x in batches:
        if pipe.ring.in_flight == 3:
            outputs.append(pipe.collect(handles.pop(0))["y"])
        handles.append(pipe.submit({"x": x}))
    outputs += [pipe.collect(h)["y"] for h in handles]
    for x, y in zip(batches, outputs):
        np.testing.assert_allclose(y, x * 2 + 1, rtol=1e-6)
    assert calls == [0, 1, 2, 0, 1, 2]  # round robin
    timings = pipe.last_timings
    assert set(timings) >= {"upload_ms", "infer_ms", "download_ms"}
    assert all(v >= 0 for v in timings.values())
    print("timings", timings)
    pipe.close()


def test_slots_full_and_order(cuda_runtime: object) -> None:
    pipe = _pipeline(cuda_runtime, slots=2)
    x = np.ones((1, *ITEM), np.float32)
    h1 = pipe.submit({"x": x})
    h2 = pipe.submit({"x": x * 2})
    with pytest.raises(SlotsFull):
        pipe.submit({"x": x})
    with pytest.raises(SlotOrderError):
        pipe.collect(h2)
    assert pipe.collect(h1)["y"][0, 0, 0, 0] == 3.0
    assert pipe.collect(h2)["y"][0, 0, 0, 0] == 5.0
    with pytest.raises(SlotOrderError):
        pipe.collect(h2)
    # a failed submission (wrong shape) leaves no slot occupied
    with pytest.raises(Exception, match="shape"):
        pipe.submit({"x": np.ones((1, 3, 8, 8), np.float32)})
    assert pipe.ring.in_flight == 0
    np.testing.assert_array_equal(pipe.run({"x": x})["y"], x * 2 + 1)
    pipe.close()


def test_device_tensors_in_place_and_batched(cuda_runtime: object) -> None:
    from edgedet.preprocess.cuda import DeviceTensor

    pipe = _pipeline(cuda_runtime, slots=2, max_batch=4)
    rng = np.random.default_rng(1)
    tensors = []
    values = []
    for _ in range(3):
        t = DeviceTensor(cuda_runtime, (1, *ITEM), "float32")  # type: ignore[arg-type]
        v = rng.standard_normal((1, *ITEM)).astype(np.float32)
        with cuda_runtime.activate():  # type: ignore[attr-defined]
            stream = cuda_runtime.stream()  # type: ignore[attr-defined]
            cuda_runtime.htod_async(t.device_ptr, v, stream)  # type: ignore[attr-defined]
            t.ready.record(stream)
        tensors.append(t)
        values.append(v)
    single = pipe.run({"x": tensors[0]})["y"]  # bound in place
    np.testing.assert_allclose(single, values[0] * 2 + 1, rtol=1e-6)
    batched = pipe.run({"x": tensors})["y"]  # copied device-to-device into the slot's batch buffer
    np.testing.assert_allclose(batched, np.concatenate(values) * 2 + 1, rtol=1e-6)
    for t in tensors:
        t.free()
    pipe.close()
