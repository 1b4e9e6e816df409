"""Where the TensorRT double reads inputs and writes outputs: the addresses edgedet gave it.

* ``HostRuntime`` implements edgedet's CudaRuntime protocol (edgedet/cudart/api.py) in host memory, for
  CI where there is no GPU: "device" buffers are numpy arrays and pointers are their addresses, copies
  are ``ctypes.memmove``, streams run everything at once. It also records CUDA objects released
  outside ``activate()`` (pycuda's "out-of-thread context could not be cleaned up", defect 7).
* ``HostMemory`` is how the double touches those addresses; ``DeviceMemory`` does the same for real
  device memory on the GPU machine through edgedet's CUDA layer (pycuda), after synchronizing the
  stream TensorRT was given.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgedet.errors import BackendError

_HANDLES = itertools.count(0x1000)


class HostRuntime:
    """edgedet.cudart.api.CudaRuntime in host memory (CI has no GPU)."""

    impl = "host"

    def __init__(
        self, name: str = "Orin", compute_capability: Tuple[int, int] = (8, 7), integrated: bool = True
    ):
        self.device_index = 0
        self.device_name = name
        self.compute_capability = compute_capability
        self.integrated = integrated
        self._depth = threading.local()
        self.leaks: List[str] = []  # CUDA objects released while the context was not pushed
        self.live: Dict[int, np.ndarray] = {}  # pointer -> the array holding that "device" memory

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._depth.value = getattr(self._depth, "value", 0) + 1
        try:
            yield
        finally:
            self._depth.value -= 1

    def active(self) -> bool:
        return getattr(self._depth, "value", 0) > 0

    def _require_active(self, what: str) -> None:
        if not self.active():
            raise BackendError(f"{what} outside runtime.activate(): no CUDA context is current")

    def alloc(self, nbytes: int) -> HostDeviceBuffer:
        self._require_active("alloc")
        return HostDeviceBuffer(self, int(nbytes))

    def alloc_host(self, shape: Tuple[int, ...], dtype: str, mapped: bool = False) -> HostPinned:
        self._require_active("alloc_host")
        return HostPinned(np.zeros(tuple(int(s) for s in shape), dtype=np.dtype(dtype)), mapped)

    def stream(self) -> HostStream:
        self._require_active("stream")
        return HostStream(self)

    def event(self, timing: bool = True) -> HostEvent:
        self._require_active("event")
        return HostEvent(self)

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._require_active("htod_async")
        src = np.ascontiguousarray(src)
        ctypes.memmove(dst, src.ctypes.data, src.nbytes)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._require_active("dtoh_async")
        if not dst.flags.c_contiguous:
            raise BackendError("dtoh_async into a non-contiguous array")
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._require_active("dtod_async")
        ctypes.memmove(dst, src, int(nbytes))

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Any) -> None:
        ctypes.memset(dst, int(value), int(nbytes))

    def compile(self, source: str, name: str, signature: str, cache_dir: Optional[str] = None) -> Any:
        raise BackendError("no CUDA kernels without a GPU (the host runtime only moves memory)")

    def close(self) -> None:
        pass


class HostDeviceBuffer:
    def __init__(self, runtime: HostRuntime, nbytes: int) -> None:
        self._array: Optional[np.ndarray] = np.zeros(max(1, nbytes), dtype=np.uint8)
        self._array = self._array[:nbytes] if nbytes else self._array
        self.ptr = int(self._array.ctypes.data)
        self.nbytes = nbytes
        self._runtime = runtime
        runtime.live[self.ptr] = self._array

    def free(self) -> None:
        if self._array is not None:
            self._runtime.live.pop(self.ptr, None)
            self._array = None
            self.ptr = 0


class HostPinned:
    def __init__(self, array: np.ndarray, mapped: bool) -> None:
        self.array = array
        self.device_ptr: Optional[int] = int(array.ctypes.data) if mapped else None

    def free(self) -> None:
        self.array = np.empty((0,), dtype=self.array.dtype)
        self.device_ptr = None


class _Owned:
    """A CUDA object (stream, event) that must be destroyed with the context pushed."""

    def __init__(self, runtime: HostRuntime) -> None:
        self._runtime = runtime

    def __del__(self) -> None:
        if not self._runtime.active():
            self._runtime.leaks.append(f"{type(self).__name__} released outside activate()")


class HostStream(_Owned):
    def __init__(self, runtime: HostRuntime) -> None:
        super().__init__(runtime)
        self.handle = next(_HANDLES)

    def synchronize(self) -> None:
        pass  # every operation already ran

    def wait_event(self, event: Any) -> None:
        pass


class HostEvent(_Owned):
    def __init__(self, runtime: HostRuntime) -> None:
        super().__init__(runtime)
        self._at: Optional[float] = None

    def record(self, stream: Any) -> None:
        self._at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_ms(self, start: Any) -> float:
        if self._at is None or start._at is None:
            raise BackendError("elapsed_ms between events that were not recorded")
        return (self._at - start._at) * 1000.0


# -- how the double reaches the addresses it was given ----------------------------------------------
class HostMemory:
    """Addresses are HostRuntime "device" buffers: checked against the live allocations (an access
    past the end is what corrupts memory on a GPU), then read and written directly."""

    kind = "host"

    def __init__(self, runtime: HostRuntime) -> None:
        self._runtime = runtime

    def _check(self, ptr: int, nbytes: int, what: str) -> None:
        for start, array in self._runtime.live.items():
            if start <= ptr and ptr + nbytes <= start + array.nbytes:
                return
        raise BackendError(
            f"TensorRT double: {what} of {nbytes} bytes at {ptr:#x} is outside every device allocation"
        )

    def synchronize(self, stream_handle: int) -> None:
        pass

    def read(self, ptr: int, shape: Sequence[int], dtype: str) -> np.ndarray:
        out = np.empty(tuple(shape), dtype=np.dtype(dtype))
        self._check(ptr, out.nbytes, "read")
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    def write(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self._check(ptr, array.nbytes, "write")
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)


class DeviceMemory:
    """Addresses are CUDA device pointers: synchronize the stream TensorRT was given, then copy through
    pycuda (edgedet's CUDA layer) with the primary context that edgedet pushed around the call."""

    kind = "device"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda

    def synchronize(self, stream_handle: int) -> None:
        try:
            import cupy

            with warnings.catch_warnings():  # ExternalStream is deprecated in CuPy 14 but takes a bare handle
                warnings.simplefilter("ignore", DeprecationWarning)
                stream = cupy.cuda.ExternalStream(int(stream_handle))
            stream.synchronize()
        except ImportError:  # the whole context then, which includes the stream
            self._cuda.Context.synchronize()

    def read(self, ptr: int, shape: Sequence[int], dtype: str) -> np.ndarray:
        out = np.empty(tuple(shape), dtype=np.dtype(dtype))
        self._cuda.memcpy_dtoh(out, int(ptr))
        return out

    def write(self, ptr: int, array: np.ndarray) -> None:
        self._cuda.memcpy_htod(int(ptr), np.ascontiguousarray(array))
