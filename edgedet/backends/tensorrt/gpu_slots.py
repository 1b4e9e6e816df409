"""The GPU side of pipelined inference, apart from TensorRT: per-slot streams, buffers and timing events.

Each slot owns one stream, device buffers for every input and output sized for the largest batch,
page-locked host buffers for uploads and downloads (all allocated once, never rebound), and four events
(start, uploaded, executed, downloaded) that give per-stage GPU times. ``execute`` is the only step that
differs between engines: the TensorRT backend binds addresses and calls ``execute_async_v3`` on the
slot's own execution context; tests use a plain CUDA kernel.

Inputs can be host arrays (copied into the slot's pinned buffer, then uploaded) or DeviceTensors from
the CUDA preprocessor: a single one is bound in place (no copy); several (a batch from several cameras)
are copied device-to-device into the slot's batch buffer. A bound DeviceTensor must not be rewritten
until its result was collected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np

from edgedet.backends.tensorrt.shapes import volume
from edgedet.backends.tensorrt.slots import SlotHandle, SlotRing
from edgedet.cudart.api import CudaRuntime, DeviceBuffer, Event, HostBuffer, Stream
from edgedet.errors import BackendError

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Binding:
    """One engine input or output: the shape of one batch item and its dtype. An output that does not
    start with the batch axis (``batched`` False, batch-1 engines only) is one whole tensor."""

    name: str
    item_shape: Tuple[int, ...]
    dtype: str
    batched: bool = True

    @property
    def item_bytes(self) -> int:
        return volume(self.item_shape) * np.dtype(self.dtype).itemsize

    def host_shape(self, max_batch: int) -> Tuple[int, ...]:
        return (max_batch, *self.item_shape) if self.batched else self.item_shape

    def nbytes(self, max_batch: int) -> int:
        return self.item_bytes * (max_batch if self.batched else 1)


class GpuSlot:
    """Everything one in-flight inference owns."""

    def __init__(
        self,
        runtime: CudaRuntime,
        index: int,
        inputs: Sequence[Binding],
        outputs: Sequence[Binding],
        max_batch: int,
    ) -> None:
        self.index = index
        self.stream: Stream = runtime.stream()
        self.device_inputs: Dict[str, DeviceBuffer] = {}
        self.host_inputs: Dict[str, HostBuffer] = {}
        self.device_outputs: Dict[str, DeviceBuffer] = {}
        self.host_outputs: Dict[str, HostBuffer] = {}
        for b in inputs:
            self.device_inputs[b.name] = runtime.alloc(b.nbytes(max_batch))
            self.host_inputs[b.name] = runtime.alloc_host(b.host_shape(max_batch), b.dtype)
        for b in outputs:
            self.device_outputs[b.name] = runtime.alloc(b.nbytes(max_batch))
            self.host_outputs[b.name] = runtime.alloc_host(b.host_shape(max_batch), b.dtype)
        self.start: Event = runtime.event()
        self.uploaded: Event = runtime.event()
        self.executed: Event = runtime.event()
        self.downloaded: Event = runtime.event()
        self.keep: List[object] = []  # device tensors bound in place, held until collected

    def free(self) -> None:
        for buf in (*self.device_inputs.values(), *self.device_outputs.values()):
            buf.free()
        for host in (*self.host_inputs.values(), *self.host_outputs.values()):
            host.free()
        self.device_inputs.clear()
        self.device_outputs.clear()
        self.host_inputs.clear()
        self.host_outputs.clear()
        self.keep = []


class DeviceTensorLike(Protocol):
    """What the CUDA preprocessor's DeviceTensor offers (edgedet/preprocess/cuda.py)."""

    nbytes: int
    ready: Event

    @property
    def device_ptr(self) -> int: ...


# execute(slot, batch, input pointers, output pointers): enqueue the work on slot.stream
ExecuteFn = Callable[[GpuSlot, int, Dict[str, int], Dict[str, int]], None]
# a host array, a DeviceTensor, or a list of either (one per camera: the worker batches frames)
Feed = Union[np.ndarray, object, Sequence[object]]


def _is_device_tensor(value: object) -> bool:
    return hasattr(value, "device_ptr") and hasattr(value, "ready") and hasattr(value, "nbytes")


class SlotPipeline:
    """Rotating GPU slots with submit/collect; see the module doc."""

    def __init__(
        self,
        runtime: CudaRuntime,
        inputs: Sequence[Binding],
        outputs: Sequence[Binding],
        slots: int,
        max_batch: int,
        execute: ExecuteFn,
        bind_in_place: bool = True,
    ) -> None:
        self.runtime = runtime
        # False when the engine reads a fixed batch larger than one tensor: then always copy
        self.bind_in_place = bind_in_place
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.max_batch = max_batch
        self._execute = execute
        self.ring = SlotRing(slots)
        self._slots: List[GpuSlot] = []
        try:
            with runtime.activate():
                for i in range(slots):
                    self._slots.append(GpuSlot(runtime, i, self.inputs, self.outputs, max_batch))
        except BaseException:
            self.close()
            raise
        self.last_timings: Dict[str, float] = {}

    @property
    def slots(self) -> Sequence[GpuSlot]:
        return self._slots

    # -- submit ----------------------------------------------------------------------------------
    def submit(self, feeds: Mapping[str, Feed], wait: Optional[float] = 0.0) -> SlotHandle:
        """Queue one batch on the next slot's stream and return at once."""
        batch = self._batch_size(feeds)
        handle = self.ring.acquire(batch, timeout=wait)
        slot = self._slots[handle.slot]
        try:
            with self.runtime.activate():
                slot.keep = []
                slot.start.record(slot.stream)
                input_ptrs = {b.name: self._stage_input(slot, b, feeds[b.name], batch) for b in self.inputs}
                slot.uploaded.record(slot.stream)
                output_ptrs = {name: buf.ptr for name, buf in slot.device_outputs.items()}
                self._execute(slot, batch, input_ptrs, output_ptrs)
                slot.executed.record(slot.stream)
                for b in self.outputs:
                    host = slot.host_outputs[b.name].array
                    part = host[:batch] if b.batched else host
                    self.runtime.dtoh_async(part, slot.device_outputs[b.name].ptr, slot.stream)
                slot.downloaded.record(slot.stream)
        except BaseException:
            # whatever was queued must finish before the slot is handed out again
            try:
                with self.runtime.activate():
                    slot.stream.synchronize()
            finally:
                slot.keep = []
                self.ring.cancel(handle)
            raise
        return handle

    def _batch_size(self, feeds: Mapping[str, Feed]) -> int:
        sizes = set()
        for b in self.inputs:
            if b.name not in feeds:
                raise BackendError(f"missing input {b.name!r} (inputs: {[i.name for i in self.inputs]})")
            value = feeds[b.name]
            if isinstance(value, np.ndarray):
                sizes.add(self._host_batch(b, value))
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
                sizes.add(sum(self._host_batch(b, v) for v in value))  # host frames of several cameras
            elif _is_device_tensor(value):
                sizes.add(1)
            elif isinstance(value, (list, tuple)) and value and all(_is_device_tensor(v) for v in value):
                sizes.add(len(value))
            else:
                raise BackendError(f"input {b.name!r}: expected a numpy array or device tensor(s)")
        unknown = set(feeds) - {b.name for b in self.inputs}
        if unknown:
            raise BackendError(
                f"unknown input(s) {sorted(unknown)} (inputs: {[i.name for i in self.inputs]})"
            )
        if len(sizes) != 1:
            raise BackendError(f"inputs disagree on the batch size: {sorted(sizes)}")
        batch = sizes.pop()
        if not 1 <= batch <= self.max_batch:
            raise BackendError(f"batch of {batch} is outside 1..{self.max_batch} (split it first)")
        return batch

    @staticmethod
    def _host_batch(b: Binding, value: np.ndarray) -> int:
        if tuple(value.shape[1:]) != b.item_shape:
            raise BackendError(
                f"input {b.name!r} has shape {list(value.shape)}; expected [N, "
                f"{', '.join(map(str, b.item_shape))}]"
            )
        return int(value.shape[0])

    def _stage_input(self, slot: GpuSlot, b: Binding, value: Feed, batch: int) -> int:
        device = slot.device_inputs[b.name]
        if isinstance(value, np.ndarray) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, np.ndarray) for v in value)
        ):
            host = slot.host_inputs[b.name].array
            start = 0
            for part in [value] if isinstance(value, np.ndarray) else value:
                n = int(part.shape[0])
                np.copyto(host[start : start + n], part, casting="same_kind")
                start += n
            self.runtime.htod_async(device.ptr, host[:batch], slot.stream)
            return device.ptr
        items = [value] if _is_device_tensor(value) else list(value)  # type: ignore[call-overload]
        tensors = cast(List[DeviceTensorLike], items)
        for t in tensors:
            if int(t.nbytes) != b.item_bytes:
                raise BackendError(
                    f"input {b.name!r}: device tensor of {t.nbytes} bytes, expected {b.item_bytes}"
                )
            slot.stream.wait_event(t.ready)  # GPU-side wait for the preprocessing kernel
        slot.keep = list(tensors)
        if len(tensors) == 1 and self.bind_in_place:
            return int(tensors[0].device_ptr)  # bound in place: no copy
        for i, t in enumerate(tensors):
            self.runtime.dtod_async(
                device.ptr + i * b.item_bytes, int(t.device_ptr), b.item_bytes, slot.stream
            )
        return device.ptr

    # -- collect ---------------------------------------------------------------------------------
    def collect(self, handle: SlotHandle) -> Dict[str, np.ndarray]:
        """Wait for ``handle`` (the oldest submission) and return copies of its outputs."""
        self.ring.check_next(handle)
        slot = self._slots[handle.slot]
        start = time.perf_counter()
        with self.runtime.activate():
            slot.downloaded.synchronize()
            timings = {
                "upload_ms": slot.uploaded.elapsed_ms(slot.start),
                "infer_ms": slot.executed.elapsed_ms(slot.uploaded),
                "download_ms": slot.downloaded.elapsed_ms(slot.executed),
            }
        outputs = {
            b.name: (
                slot.host_outputs[b.name].array[: handle.batch]
                if b.batched
                else slot.host_outputs[b.name].array
            ).copy()
            for b in self.outputs
        }  # copies: the pinned buffers are reused by this slot's next submission
        timings["wait_ms"] = (time.perf_counter() - start) * 1000.0
        self.last_timings = timings
        slot.keep = []
        self.ring.release(handle)
        return outputs

    def run(self, feeds: Mapping[str, Feed]) -> Dict[str, np.ndarray]:
        """Synchronous: submit and collect (an error while asynchronous results are uncollected)."""
        if self.ring.in_flight:
            raise BackendError(
                "a synchronous run while submitted results are uncollected: collect them first"
            )
        return self.collect(self.submit(feeds))

    def close(self) -> None:
        if not self._slots:
            return
        with self.runtime.activate():
            slots, self._slots = self._slots, []
            for slot in slots:
                try:
                    slot.stream.synchronize()
                finally:
                    slot.free()
            # the streams and events die here, with the context pushed: released later from another
            # thread, pycuda reports "out-of-thread context could not be cleaned up" and leaks them
            del slots, slot
