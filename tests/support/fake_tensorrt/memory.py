"""Where the TensorRT double reads inputs and writes outputs: the addresses edgedet gave it.

* ``HostRuntime`` implements edgedet's CudaRuntime protocol (edgedet/cudart/api.py) in host memory, for
  CI where there is no GPU: "device" buffers are numpy arrays and pointers are their addresses, copies
  are ``ctypes.memmove``, streams run everything at once. It also records CUDA objects released
  outside ``activate()`` (pycuda's "out-of-thread context could not be cleaned up", defect 7), the
  host memory every upload came from, and the page-locked buffers it handed out. With
  ``kernels=True`` it "compiles" edgedet's letterbox kernel into ``HostLetterboxKernel``, which does
  the kernel's work in numpy from the pointers it is launched with, so CudaPreprocessor runs in CI.
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
        self,
        name: str = "Orin",
        compute_capability: Tuple[int, int] = (8, 7),
        integrated: bool = True,
        kernels: bool = False,
    ):
        self.kernels = kernels
        self.uploads_from: List[int] = []  # the host address of every htod copy, in order
        self.host_buffers: Dict[int, HostPinned] = {}  # address -> page-locked buffers handed out
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
        host = HostPinned(np.zeros(tuple(int(s) for s in shape), dtype=np.dtype(dtype)), mapped, self)
        self.host_buffers[host.address] = host
        return host

    def stream(self) -> HostStream:
        self._require_active("stream")
        return HostStream(self)

    def event(self, timing: bool = True) -> HostEvent:
        self._require_active("event")
        return HostEvent(self)

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._require_active("htod_async")
        src = np.ascontiguousarray(src)
        self.uploads_from.append(int(src.ctypes.data))
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
        self._require_active("compile")
        if not self.kernels or name not in ("letterbox_f32", "letterbox_f16"):
            raise BackendError("no CUDA kernels without a GPU (the host runtime only moves memory)")
        return HostLetterboxKernel(self, name, signature)

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
    def __init__(self, array: np.ndarray, mapped: bool, runtime: Optional[HostRuntime] = None) -> None:
        self.array = array
        self.address = int(array.ctypes.data)
        self.device_ptr: Optional[int] = self.address if mapped else None
        self.freed = False
        self._runtime = runtime
        if runtime is not None:
            runtime.live[self.address] = array  # mapped memory is readable by kernels, like device memory

    def free(self) -> None:
        if self._runtime is not None and not self.freed:
            self._runtime.live.pop(self.address, None)
        self.array = np.empty((0,), dtype=self.array.dtype)
        self.device_ptr = None
        self.freed = True


class HostLetterboxKernel:
    """edgedet's letterbox kernel (edgedet/preprocess/cuda_kernel.py) done in numpy on the host: reads
    the BGR frame at the source pointer (pitched rows), resizes with OpenCV's INTER_LINEAR (which the
    real kernel reproduces bit for bit), writes CHW float32/float16 to the output pointer. Launch
    arguments follow the kernel's signature; both pointers must lie in live HostRuntime memory."""

    def __init__(self, runtime: HostRuntime, name: str, signature: str) -> None:
        self.runtime = runtime
        self.name = name
        self.dtype = np.dtype(np.float16 if name.endswith("f16") else np.float32)
        self.launches = 0

    def _view(self, ptr: int, nbytes: int, what: str) -> np.ndarray:
        for start, array in self.runtime.live.items():
            if start <= ptr and ptr + nbytes <= start + array.nbytes:
                raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
                return np.ctypeslib.as_array(raw)
        raise BackendError(f"letterbox kernel: {what} at {ptr:#x} is outside every allocation")

    def launch(self, grid: Any, block: Any, stream: Any, args: Sequence[Any]) -> None:
        import cv2

        self.runtime._require_active("kernel launch")
        src_ptr, pitch, src_w, src_h, _xtab, _ytab, new_w, new_h, pad_x, pad_y, out_ptr, width, height = (
            int(a) for a in args[:13]
        )
        consts = np.asarray([float(a) for a in args[13:22]], dtype=np.float32)
        reverse = bool(int(args[22]))
        a, b, pad = consts[0:3], consts[3:6], consts[6:9]
        rows = self._view(src_ptr, pitch * (src_h - 1) + src_w * 3, "source").copy()
        rows = np.concatenate([rows, np.zeros(pitch * src_h - rows.size, np.uint8)])
        image = rows.reshape(src_h, pitch)[:, : src_w * 3].reshape(src_h, src_w, 3)
        if (new_w, new_h) != (src_w, src_h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        chw = image.transpose(2, 0, 1)
        if reverse:
            chw = chw[::-1]
        out = np.empty((3, height, width), dtype=np.float32)
        out[:] = pad.reshape(3, 1, 1)
        out[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = chw.astype(np.float32) * a.reshape(
            3, 1, 1
        ) + b.reshape(3, 1, 1)
        result = out.astype(self.dtype)
        self._view(out_ptr, result.nbytes, "output")[:] = result.view(np.uint8).reshape(-1)
        self.launches += 1


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
