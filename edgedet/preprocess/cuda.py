"""CUDA preprocessing: letterbox + colour order + scaling + HWC->CHW + float16/32 in one kernel.

Runs in the capture thread with the device's primary context pushed for each call. The frame reaches
the GPU one of three ways:

* it already sits in a buffer from ``frame_buffer()`` (page-locked; the daemon's sources decode straight
  into a small pool of them, edgedet/sources/frames.py): one asynchronous upload, the fastest path on a
  discrete GPU;
* it sits in a ``frame_buffer(mapped=True)`` buffer (the default on Jetson, where CPU and GPU share
  DRAM): the kernel reads it in place, no copy at all;
* any other numpy array (what OpenCV's decoders return): uploaded from pageable memory (the driver
  stages it and blocks), about 3-4x slower than from pinned memory on an H200. ``stage_frames=True``
  copies it into page-locked staging buffers of our own first (mapped on Jetson, where the kernel then
  reads them in place); measured on the H200 that is slower still (the extra host copy costs more than
  the driver's staging: docs/measured/gpu/bench.txt), so it is off by default. A source whose decoder
  could not write into a frame buffer (the frame changed size) takes this path for that frame.

``path_stats()`` counts the frames that took each path, with medians per path of the wall time of
``run()`` (upload and kernel, plus whatever the calling thread waited for the GIL), of the upload call
on the host, and of the upload on the GPU (CUDA events around the copy, when ``run()`` synchronizes).

The output is a ``DeviceTensor`` (1x3xHxW on the device) whose pointer the TensorRT backend binds as
its input; the values equal ``CpuPreprocessor``'s (same OpenCV resize arithmetic, same constants).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

from edgedet.cudart import open_runtime
from edgedet.cudart.api import CudaRuntime, DeviceBuffer, Event, HostBuffer, Kernel, Stream
from edgedet.errors import BackendError
from edgedet.preprocess.base import letterbox_geometry
from edgedet.preprocess.cpu import channel_affine
from edgedet.preprocess.cuda_kernel import KERNEL_SIGNATURE, KERNEL_SOURCE
from edgedet.preprocess.resize_tables import packed_table
from edgedet.types import ChannelOrder, InputSpec, Letterbox

log = logging.getLogger(__name__)

_BLOCK = (32, 8, 1)
PATHS = ("pinned", "mapped", "pageable", "staged")  # how a frame reached the kernel (module docstring)
_PATH_SAMPLES = 2000  # run() times kept per path for the median


def _median(values: List[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


class DeviceTensor:
    """A model-input tensor in device memory, allocated once and reused (one per buffer-pool slot).

    ``ready`` is the event recorded after the kernel wrote it; a consumer on another stream waits on it
    (``stream.wait_event(tensor.ready)``), or calls ``synchronize()``.
    """

    def __init__(self, runtime: CudaRuntime, shape: Tuple[int, ...], dtype: str) -> None:
        self.runtime = runtime
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        with runtime.activate():
            self._buffer: Optional[DeviceBuffer] = runtime.alloc(self.nbytes)
            self.ready: Event = runtime.event(timing=False)

    @property
    def device_ptr(self) -> int:
        if self._buffer is None:
            raise BackendError("the device tensor was freed")
        return self._buffer.ptr

    def synchronize(self) -> None:
        with self.runtime.activate():
            self.ready.synchronize()

    def to_host(self) -> np.ndarray:
        """Download (after the producing kernel has finished): for tests and the CPU fallback."""
        out = np.empty(self.shape, dtype=self.dtype)
        with self.runtime.activate():
            stream = self.runtime.stream()
            stream.wait_event(self.ready)
            self.runtime.dtoh_async(out, self.device_ptr, stream)
            stream.synchronize()
        return out

    def __array__(self, dtype: Optional[np.dtype] = None, copy: Optional[bool] = None) -> np.ndarray:
        # lets a CPU-only consumer (np.asarray) still work, at the price of a download
        host = self.to_host()
        return host if dtype is None else host.astype(dtype)

    def free(self) -> None:
        if self._buffer is not None:
            with self.runtime.activate():
                self._buffer.free()
            self._buffer = None


class _SourceGeometry:
    """Per source size: letterbox geometry plus the resize tables on the device."""

    def __init__(self, runtime: CudaRuntime, src_w: int, src_h: int, spec: InputSpec) -> None:
        self.scale, self.new_w, self.new_h, self.pad_x, self.pad_y = letterbox_geometry(src_w, src_h, spec)
        xtab = packed_table(src_w, self.new_w, clamp=True)
        ytab = packed_table(src_h, self.new_h, clamp=False)  # the kernel clips the two rows itself
        self.xtab = runtime.alloc(xtab.nbytes)
        self.ytab = runtime.alloc(ytab.nbytes)
        stream = runtime.stream()
        runtime.htod_async(self.xtab.ptr, xtab, stream)
        runtime.htod_async(self.ytab.ptr, ytab, stream)
        stream.synchronize()

    def free(self) -> None:
        self.xtab.free()
        self.ytab.free()


class CudaPreprocessor:
    """The Preprocessor protocol on CUDA (see edgedet/preprocess/base.py and CpuPreprocessor)."""

    def __init__(
        self,
        spec: InputSpec,
        device: int = 0,
        runtime: Optional[CudaRuntime] = None,
        cache_dir: Optional[str] = None,
        synchronize: bool = True,
        timing: bool = False,
        stage_frames: bool = False,
    ) -> None:
        if spec.dtype not in ("float32", "float16"):
            raise ValueError(f"unsupported input dtype {spec.dtype!r} (float32 or float16)")
        if runtime is None:
            runtime = open_runtime(device)
        self.spec = spec
        self.runtime = runtime
        self.synchronize = synchronize
        a, b = channel_affine(spec)
        pad = np.float32(spec.pad_value) * a + b  # the same float32 arithmetic as CpuPreprocessor
        self._consts = [float(v) for v in (*a.tolist(), *b.tolist(), *pad.astype(np.float32).tolist())]
        self._reverse = 1 if spec.channel_order == ChannelOrder.RGB else 0
        self._lock = threading.Lock()  # one capture thread per preprocessor; guards against misuse
        self._geometry: Dict[Tuple[int, int], _SourceGeometry] = {}
        self._frames: Dict[int, HostBuffer] = {}  # data pointer -> pinned/mapped frame buffers we own
        self._frames_lock = threading.Lock()  # sources allocate frame buffers in their reader threads
        self.frames_by_path: Dict[str, int] = dict.fromkeys(PATHS, 0)
        self._path_ms: Dict[str, Deque[float]] = {p: collections.deque(maxlen=_PATH_SAMPLES) for p in PATHS}
        self._upload_ms: Dict[str, Deque[Tuple[float, float]]] = {
            p: collections.deque(maxlen=_PATH_SAMPLES) for p in PATHS
        }  # (host ms of the upload call, GPU ms between events around it)
        self._last_upload: Optional[float] = None
        self._staging: Optional[DeviceBuffer] = None
        self.stage_frames = stage_frames
        # page-locked (mapped on integrated GPUs) host copies of pageable frames, used in turn; each
        # with the event after the kernel that last read it, so it is not overwritten too early
        self._host_ring: List[Tuple[HostBuffer, Event]] = []
        self._host_next = 0
        self.last_timing_ms: Dict[str, float] = {}
        name = "letterbox_f16" if spec.dtype == "float16" else "letterbox_f32"
        with runtime.activate():
            self._kernel: Kernel = runtime.compile(KERNEL_SOURCE, name, KERNEL_SIGNATURE, cache_dir)
            self._stream: Stream = runtime.stream()
            # after the upload from a pinned frame buffer: the buffer may be written again once it passed
            self._uploaded: Event = runtime.event(timing=False)
            self._upload_span: Tuple[Event, Event] = (runtime.event(), runtime.event())
            # GPU time of upload + kernel, for stage statistics (read after the stream synchronized)
            self._timing: Optional[Tuple[Event, Event]] = (
                (runtime.event(), runtime.event()) if timing else None
            )
        self._closed = False

    # -- buffers ---------------------------------------------------------------------------------
    def allocate(self) -> DeviceTensor:
        return DeviceTensor(self.runtime, (1, 3, self.spec.height, self.spec.width), self.spec.dtype)

    def frame_buffer(self, width: int, height: int, mapped: Optional[bool] = None) -> np.ndarray:
        """A page-locked HxWx3 uint8 array to decode frames into (``cap.read(image=buf)``); it may be
        written again as soon as ``run()`` that read it returns (FrameMemory in preprocess/base.py).

        ``mapped`` (default: on integrated GPUs such as Jetson) makes the kernel read it in place.
        """
        if mapped is None:
            mapped = self.runtime.integrated
        if self._closed:
            raise BackendError("the CUDA preprocessor is closed")
        with self.runtime.activate():
            host = self.runtime.alloc_host((int(height), int(width), 3), "uint8", mapped=mapped)
        with self._frames_lock:
            self._frames[host.array.ctypes.data] = host
        return host.array

    def free_frame_buffer(self, array: np.ndarray) -> None:
        """Free a buffer from ``frame_buffer`` (a no-op for any other array, or after close())."""
        with self._frames_lock:
            host = self._frames.get(array.ctypes.data)
            if host is None or host.array is not array:
                return
            del self._frames[array.ctypes.data]
        with self._lock, self.runtime.activate():  # not while a run() may still read it
            host.free()

    def path_stats(self) -> Dict[str, Dict[str, float]]:
        """Per path (pinned, mapped, pageable, staged): frames, and median ms of ``run()``."""
        out: Dict[str, Dict[str, float]] = {}
        for path in PATHS:
            median = _median(list(self._path_ms[path]))
            uploads = list(self._upload_ms[path])
            out[path] = {
                "frames": float(self.frames_by_path[path]),
                "median_ms": round(median, 4),
                "upload_call_ms": round(_median([u[0] for u in uploads]), 4),
                "upload_gpu_ms": round(_median([u[1] for u in uploads]), 4),
            }
        return out

    # -- the work --------------------------------------------------------------------------------
    def run(self, image: np.ndarray, out: object) -> Letterbox:
        if not isinstance(out, DeviceTensor) or out.shape != (1, 3, self.spec.height, self.spec.width):
            raise ValueError("output buffer must come from CudaPreprocessor.allocate()")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {image.shape} {image.dtype}")
        if self._closed:
            raise BackendError("the CUDA preprocessor is closed")
        src_h, src_w = int(image.shape[0]), int(image.shape[1])
        with self._lock, self.runtime.activate():
            geo = self._geometry_for(src_w, src_h)
            start = time.perf_counter()
            if self._timing is not None:
                self._timing[0].record(self._stream)
            self._last_upload = None
            src_ptr, pitch, used, path = self._source_pointer(image)
            args: List[object] = [
                src_ptr, pitch, src_w, src_h, geo.xtab.ptr, geo.ytab.ptr,
                geo.new_w, geo.new_h, int(geo.pad_x), int(geo.pad_y),
                out.device_ptr, self.spec.width, self.spec.height,
                *self._consts, self._reverse,
            ]  # fmt: skip
            grid = (
                (self.spec.width + _BLOCK[0] - 1) // _BLOCK[0],
                (self.spec.height + _BLOCK[1] - 1) // _BLOCK[1],
                1,
            )
            self._kernel.launch(grid, _BLOCK, self._stream, args)  # type: ignore[arg-type]
            out.ready.record(self._stream)
            if used is not None:
                used.record(self._stream)
            if self._timing is not None:
                self._timing[1].record(self._stream)
            timings = {}
            if self.synchronize:
                self._stream.synchronize()
                if self._timing is not None:
                    timings["gpu_ms"] = self._timing[1].elapsed_ms(self._timing[0])
                if self._last_upload is not None:
                    gpu = self._upload_span[1].elapsed_ms(self._upload_span[0])
                    self._upload_ms[path].append((self._last_upload, gpu))
            elif path == "pinned":
                self._uploaded.synchronize()  # the frame buffer may be decoded into again
            elif path == "mapped":
                out.ready.synchronize()  # the kernel read the frame buffer in place
            timings["host_ms"] = (time.perf_counter() - start) * 1000.0
            self.last_timing_ms = timings
            self.frames_by_path[path] += 1
            self._path_ms[path].append(timings["host_ms"])
        return Letterbox(
            scale=geo.scale, pad_x=geo.pad_x, pad_y=geo.pad_y, source_width=src_w, source_height=src_h
        )

    def _geometry_for(self, src_w: int, src_h: int) -> _SourceGeometry:
        geo = self._geometry.get((src_w, src_h))
        if geo is None:
            if len(self._geometry) > 16:  # a source that keeps changing size: stay bounded
                for old in self._geometry.values():
                    old.free()
                self._geometry.clear()
            geo = self._geometry[(src_w, src_h)] = _SourceGeometry(self.runtime, src_w, src_h, self.spec)
        return geo

    def _source_pointer(self, image: np.ndarray) -> Tuple[int, int, Optional[Event], str]:
        """A device-readable pointer to the frame, its row pitch in bytes (uploading if needed), the
        event to record once the kernel has read a staging buffer (None when no staging was used), and
        the path the frame took (PATHS)."""
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        pitch = int(image.strides[0])
        with self._frames_lock:
            host = self._frames.get(image.ctypes.data)
        used: Optional[Event] = None
        path = "mapped"
        if host is None or host.array.shape != image.shape:
            if not self.stage_frames:
                return self._upload(image), pitch, None, "pageable"
            host, used = self._stage_host(image)
            path = "staged"
        if host.device_ptr is not None:
            return host.device_ptr, pitch, used, path  # mapped: the kernel reads host memory in place
        ptr = self._upload(host.array)  # pinned: an asynchronous DMA
        if used is None:
            self._uploaded.record(self._stream)
            path = "pinned"
        return ptr, pitch, used, path

    def _stage_host(self, image: np.ndarray) -> Tuple[HostBuffer, Event]:
        """Copy a pageable frame into the next page-locked staging buffer (after its last reader)."""
        if not self._host_ring or self._host_ring[0][0].array.shape != image.shape:
            self._stream.synchronize()
            for old, _ in self._host_ring:
                old.free()
            mapped = self.runtime.integrated
            self._host_ring = [
                (
                    self.runtime.alloc_host(image.shape, "uint8", mapped=mapped),
                    self.runtime.event(timing=False),
                )
                for _ in range(2)
            ]
        host, done = self._host_ring[self._host_next]
        self._host_next = (self._host_next + 1) % len(self._host_ring)
        done.synchronize()  # the kernel that read this buffer last has finished
        np.copyto(host.array, image)
        return host, done

    def _upload(self, image: np.ndarray) -> int:
        nbytes = image.nbytes
        if self._staging is None or self._staging.nbytes < nbytes:
            if self._staging is not None:
                self._stream.synchronize()
                self._staging.free()
            self._staging = self.runtime.alloc(nbytes)
        # pinned memory: a true async DMA; pageable memory: the driver copies through its own staging.
        # Upload and kernel share one stream, so the next frame's upload cannot overwrite the staging
        # buffer before this kernel has read it, even when run() does not synchronize.
        start = time.perf_counter()
        self._upload_span[0].record(self._stream)
        self.runtime.htod_async(self._staging.ptr, image, self._stream)
        self._upload_span[1].record(self._stream)
        self._last_upload = (time.perf_counter() - start) * 1000.0
        return self._staging.ptr

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.runtime.activate():
            self._stream.synchronize()
            for geo in self._geometry.values():
                geo.free()
            self._geometry.clear()
            if self._staging is not None:
                self._staging.free()
                self._staging = None
            with self._frames_lock:
                for host in self._frames.values():
                    host.free()
                self._frames.clear()
            for host, _ in self._host_ring:
                host.free()
            self._host_ring = []  # the events die here, with the context pushed
