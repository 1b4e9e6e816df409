"""The pycuda implementation of edgedet.cudart.api.

Uses the device's primary context (the one TensorRT's runtime API uses), pushed in every thread that
touches CUDA and popped afterwards; never ``pycuda.autoinit``, whose context is current only in the
importing thread and is popped at exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from edgedet.cudart.api import Event, KernelArg, Stream
from edgedet.errors import BackendError, DependencyError, require

log = logging.getLogger(__name__)

_INIT_LOCK = threading.Lock()


def _driver() -> Any:
    return require("pycuda.driver", "jetson", "CUDA preprocessing and the TensorRT backend")


def find_nvcc() -> Optional[str]:
    """nvcc on PATH, else under $CUDA_HOME or /usr/local/cuda (JetPack does not put it on PATH)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").is_file():
            return str(Path(root, "bin", "nvcc"))
    return None


def default_kernel_cache_dir() -> str:
    """A writable folder for compiled kernels: systemd's $CACHE_DIRECTORY, ~/.cache, else /tmp."""
    candidates = []
    if os.environ.get("CACHE_DIRECTORY"):
        candidates.append(Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "cuda-kernels")
    candidates.append(Path(os.path.expanduser("~")) / ".cache" / "edgedet" / "cuda-kernels")
    candidates.append(Path(tempfile.gettempdir()) / f"edgedet-cuda-kernels-{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return str(path)
        except OSError:
            continue
    raise BackendError("no writable folder for compiled CUDA kernels (set CACHE_DIRECTORY)")


class PycudaDeviceBuffer:
    def __init__(self, alloc: Any, nbytes: int) -> None:
        self._alloc: Any = alloc
        self.ptr = int(alloc)
        self.nbytes = nbytes

    def free(self) -> None:
        if self._alloc is not None:
            self._alloc.free()
            self._alloc = None
            self.ptr = 0


class PycudaHostBuffer:
    def __init__(self, array: np.ndarray, device_ptr: Optional[int]) -> None:
        self.array = array
        self.device_ptr = device_ptr

    def free(self) -> None:
        base = getattr(self.array, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()
        self.array = np.empty((0,), dtype=self.array.dtype)
        self.device_ptr = None


class PycudaStream:
    def __init__(self, stream: Any) -> None:
        self.raw = stream
        self.handle = int(stream.handle)

    def synchronize(self) -> None:
        self.raw.synchronize()

    def wait_event(self, event: Event) -> None:
        self.raw.wait_for_event(_raw(event))


class PycudaEvent:
    def __init__(self, event: Any) -> None:
        self.raw = event

    def record(self, stream: Stream) -> None:
        self.raw.record(_raw(stream))

    def synchronize(self) -> None:
        self.raw.synchronize()

    def query(self) -> bool:
        return bool(self.raw.query())

    def elapsed_ms(self, start: Event) -> float:
        return float(self.raw.time_since(_raw(start)))


def _raw(obj: object) -> Any:
    raw = getattr(obj, "raw", None)
    if raw is None:
        raise TypeError(f"{type(obj).__name__} does not come from the pycuda runtime")
    return raw


class PycudaKernel:
    def __init__(self, module: Any, function: Any, name: str) -> None:
        self._module = module  # keeps the module (and so the function) loaded
        self._function = function
        self.name = name

    def launch(
        self,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        stream: Stream,
        args: Sequence[KernelArg],
    ) -> None:
        self._function.prepared_async_call(grid, block, _raw(stream), *args)


class PycudaRuntime:
    """One device's primary context plus factories for everything allocated under it."""

    impl = "pycuda"

    def __init__(self, cuda: Any, device: Any, context: Any, index: int) -> None:
        self._cuda = cuda
        self._device = device
        self._context: Any = context
        self.device_index = index
        self.device_name = str(device.name())
        major, minor = device.compute_capability()
        self.compute_capability = (int(major), int(minor))
        self.integrated = bool(device.get_attribute(cuda.device_attribute.INTEGRATED))
        self._modules: Dict[Tuple[str, str], PycudaKernel] = {}

    @classmethod
    def open(cls, index: int = 0) -> PycudaRuntime:
        cuda = _driver()
        with _INIT_LOCK:
            try:
                cuda.init()
                count = cuda.Device.count()
                if index >= count:
                    raise BackendError(f"CUDA device {index} does not exist ({count} device(s) found)")
                device = cuda.Device(index)
                context = device.retain_primary_context()
            except cuda.Error as exc:
                raise BackendError(f"cannot initialise CUDA device {index}: {exc}") from exc
        return cls(cuda, device, context, index)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Push the primary context in this thread for the duration of the block."""
        if self._context is None:
            raise BackendError("the CUDA runtime is closed")
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def alloc(self, nbytes: int) -> PycudaDeviceBuffer:
        try:
            return PycudaDeviceBuffer(self._cuda.mem_alloc(max(1, int(nbytes))), int(nbytes))
        except self._cuda.Error as exc:
            raise BackendError(f"cannot allocate {nbytes} bytes of device memory: {exc}") from exc

    def alloc_host(self, shape: Tuple[int, ...], dtype: str, mapped: bool = False) -> PycudaHostBuffer:
        cuda = self._cuda
        flags = cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        try:
            array = cuda.pagelocked_empty(tuple(int(s) for s in shape), np.dtype(dtype), mem_flags=flags)
            device_ptr = int(array.base.get_device_pointer()) if mapped else None
        except cuda.Error as exc:
            kind = "mapped" if mapped else "pinned"
            raise BackendError(f"cannot allocate {kind} host memory {shape} {dtype}: {exc}") from exc
        return PycudaHostBuffer(array, device_ptr)

    def stream(self) -> PycudaStream:
        return PycudaStream(self._cuda.Stream())

    def event(self, timing: bool = True) -> PycudaEvent:
        flags = 0 if timing else self._cuda.event_flags.DISABLE_TIMING
        return PycudaEvent(self._cuda.Event(flags))

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream) -> None:
        self._cuda.memcpy_htod_async(dst, src, _raw(stream))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, _raw(stream))

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        self._cuda.memcpy_dtod_async(dst, src, int(nbytes), _raw(stream))

    def memset_async(self, dst: int, value: int, nbytes: int, stream: Stream) -> None:
        self._cuda.memset_d8_async(dst, int(value), int(nbytes), _raw(stream))

    def compile(
        self, source: str, name: str, signature: str, cache_dir: Optional[str] = None
    ) -> PycudaKernel:
        key = (source, name)
        cached = self._modules.get(key)
        if cached is not None:
            return cached
        compiler: Any = require("pycuda.compiler", "jetson", "CUDA preprocessing")
        nvcc = find_nvcc()
        if nvcc is None:
            raise DependencyError(
                "CUDA preprocessing compiles its kernel with nvcc, which was not found on PATH, in "
                "$CUDA_HOME/bin or /usr/local/cuda/bin (JetPack: apt install cuda-nvcc-<version>; "
                "or set preprocess.type: cpu)"
            )
        folder = cache_dir or default_kernel_cache_dir()
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)  # pycuda writes the cubin there, never creates it
        except OSError:
            folder = default_kernel_cache_dir()
        try:
            module = compiler.SourceModule(
                source,
                nvcc=nvcc,
                no_extern_c=True,
                options=["-O3"],
                cache_dir=folder,
            )
            function = module.get_function(name)
            function.prepare(signature)
        except Exception as exc:  # pycuda raises CompileError, LogicError ...
            raise BackendError(f"cannot compile the CUDA kernel {name}: {exc}") from exc
        kernel = PycudaKernel(module, function, name)
        self._modules[key] = kernel
        return kernel

    def close(self) -> None:
        # the retained primary context is released when pycuda's Context object is collected;
        # detaching it here could pull it from under TensorRT or another preprocessor in this process
        self._modules.clear()
        self._context = None
