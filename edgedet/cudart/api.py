"""The CUDA interface the preprocessing kernel and the TensorRT slots are written against.

Pointers are plain ints (what TensorRT's ``set_tensor_address`` and ``execute_async_v3`` take), so an
implementation only has to wrap its own handles. Every call that touches the GPU must run inside
``with runtime.activate():`` (the primary context pushed in the calling thread, popped afterwards).
"""

from __future__ import annotations

from typing import ContextManager, Optional, Sequence, Tuple, Union

import numpy as np

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]


class DeviceBuffer(Protocol):
    """Device memory allocated once and owned; ``free`` is explicit (``__del__`` is only a fallback)."""

    ptr: int
    nbytes: int

    def free(self) -> None: ...


class HostBuffer(Protocol):
    """Page-locked host memory seen as a numpy array.

    ``device_ptr`` is set for mapped (zero-copy) memory: a kernel can read it directly. On Jetson CPU and
    GPU share DRAM, so this saves the upload; on a discrete GPU reads go over PCIe.
    """

    array: np.ndarray
    device_ptr: Optional[int]

    def free(self) -> None: ...


class Stream(Protocol):
    handle: int  # cudaStream_t as int, for TensorRT's execute_async_v3

    def synchronize(self) -> None: ...

    def wait_event(self, event: Event) -> None: ...


class Event(Protocol):
    def record(self, stream: Stream) -> None: ...

    def synchronize(self) -> None: ...

    def query(self) -> bool: ...

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded, this one completed)."""
        ...


KernelArg = Union[int, float, np.generic]


class Kernel(Protocol):
    def launch(
        self,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        stream: Stream,
        args: Sequence[KernelArg],
    ) -> None: ...


class CudaRuntime(Protocol):
    impl: str
    device_index: int
    device_name: str
    compute_capability: Tuple[int, int]
    integrated: bool  # True on Jetson (CPU and GPU share memory)

    def activate(self) -> ContextManager[None]: ...

    def alloc(self, nbytes: int) -> DeviceBuffer: ...

    def alloc_host(self, shape: Tuple[int, ...], dtype: str, mapped: bool = False) -> HostBuffer: ...

    def stream(self) -> Stream: ...

    def event(self, timing: bool = True) -> Event: ...

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream) -> None: ...

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream) -> None: ...

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Stream) -> None: ...

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Stream) -> None: ...

    def compile(self, source: str, name: str, signature: str, cache_dir: Optional[str] = None) -> Kernel:
        """Compile CUDA C++ ``source`` (extern "C" kernels) and return kernel ``name``.

        ``signature`` is pycuda's prepared-call format: one letter per argument (P pointer, i int32,
        f float32, ...).
        """
        ...

    def close(self) -> None: ...
