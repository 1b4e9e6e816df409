"""Frame buffers the sources decode into, lent by the preprocessor (CUDA: pinned or mapped memory).

With CUDA preprocessing a frame decoded into an ordinary numpy array is uploaded from pageable memory:
the driver copies it through a staging buffer of its own, 2.4x slower than from page-locked memory on
an H200 (docs/measured/gpu). So each camera keeps a small pool of the preprocessor's own buffers
(``FrameMemory.frame_buffer``) and its reader decodes straight into one (``ReadsInto.read_into``:
OpenCV's ``cap.read(image=buf)`` writes into ``buf`` when the size fits). The buffer travels with
the frame through the capture mailbox and comes back here as soon as the preprocessor has read it. A
picture kept for tracking snapshots is a copy (it lives on after inference, with no release point).

Nothing blocks: with every buffer lent out, or before the first frame told the size, a frame is
decoded the ordinary way. When the decoder hands back a new array instead of the buffer (the camera
switched resolution), that frame takes the pageable path, the pool says so once and re-sizes its
buffers to the new frame size (a few times at most; after that the source stays on the pageable path).
With CPU preprocessing there is no pool and nothing changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgedet.preprocess.base import FrameMemory
from edgedet.sources.base import FrameReader, ReadsInto

log = logging.getLogger(__name__)

MAX_RESIZES = 4  # frame-size changes the pool follows; a source that keeps changing stays pageable

Shape = Tuple[int, int, int]


class FramePool:
    """Up to ``size`` buffers of one frame shape, lent to the reader thread and given back once read.

    Thread-safe: the reader thread acquires, the capture worker (or the inference consumer) releases.
    Counters (read by status and tools): ``decoded_into`` frames written into a buffer, ``pageable``
    frames that were not (pool empty, size not yet known, or size changed).
    """

    def __init__(self, memory: FrameMemory, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("a frame pool needs at least one buffer")
        self.memory = memory
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        self._shape: Optional[Shape] = None
        self._free: List[np.ndarray] = []
        self._lent: Dict[int, np.ndarray] = {}  # id() -> buffer being decoded into or carrying a frame
        self._allocated = 0  # buffers of the current shape, free or lent
        self._resizes = 0
        self._closed = False
        self.decoded_into = 0
        self.pageable = 0

    @property
    def shape(self) -> Optional[Shape]:
        return self._shape

    @property
    def enabled(self) -> bool:
        return not self._closed and self._resizes <= MAX_RESIZES

    def lent(self) -> int:
        with self._lock:
            return len(self._lent)

    def owns(self, image: np.ndarray) -> bool:
        """True while ``image`` is one of this pool's buffers and lent out."""
        with self._lock:
            return self._lent.get(id(image)) is image

    def acquire(self) -> Optional[np.ndarray]:
        """A buffer to decode into, or None (size unknown yet, every buffer lent, closed, disabled)."""
        with self._lock:
            if self._shape is None or not self.enabled:
                return None
            if self._free:
                buf = self._free.pop()
            elif self._allocated < self.size:
                height, width = self._shape[0], self._shape[1]
                buf = self.memory.frame_buffer(width, height)  # outside the lock would race close()
                self._allocated += 1
            else:
                return None
            self._lent[id(buf)] = buf
            return buf

    def release(self, image: np.ndarray) -> None:
        """Give a buffer back (the frame in it is not read again). Any other array is ignored, so
        every frame can be handed here whatever it was decoded into; a second release is ignored too."""
        free_it = False
        with self._lock:
            if self._lent.get(id(image)) is not image:
                return
            del self._lent[id(image)]
            if self._closed or image.shape != self._shape:
                free_it = True  # a buffer of the old size, or the pool is gone
            else:
                self._free.append(image)
        if free_it:
            self.memory.free_frame_buffer(image)

    def learn(self, frame: np.ndarray) -> None:
        """The source delivers frames of ``frame``'s shape: buffers of that shape from now on."""
        shape = (int(frame.shape[0]), int(frame.shape[1]), int(frame.shape[2]))
        with self._lock:
            if shape == self._shape or self._closed:
                return
            first = self._shape is None
            if not first:
                self._resizes += 1
            old, self._free = self._free, []
            self._shape = shape
            self._allocated = sum(1 for b in self._lent.values() if b.shape == shape)
            resizes = self._resizes
        for buf in old:
            self.memory.free_frame_buffer(buf)
        if first:
            log.info("%s: decoding into %d frame buffers of %dx%d", self.name, self.size, shape[1], shape[0])
        elif resizes <= MAX_RESIZES:
            log.info(
                "%s: the source switched to %dx%d frames; that frame took the pageable path, "
                "new frame buffers follow",
                self.name,
                shape[1],
                shape[0],
            )
        elif resizes == MAX_RESIZES + 1:
            log.warning(
                "%s: the frame size changed %d times; decoding the ordinary (pageable) way from now on",
                self.name,
                resizes,
            )

    def read(self, reader: FrameReader) -> Optional[np.ndarray]:
        """The reader's next frame, decoded into a lent buffer whenever possible (see the module)."""
        into = reader if isinstance(reader, ReadsInto) else None
        buf = self.acquire() if into is not None else None
        if into is None or buf is None:
            frame = reader.read()
        else:
            try:
                frame = into.read_into(buf)
            except BaseException:
                self.release(buf)
                raise
            if frame is not None and frame is not buf and _same_memory(frame, buf):
                frame = buf  # another view of the buffer (a binding that wraps it anew)
            if frame is not buf:
                self.release(buf)  # nothing in it: a failed read, or the decoder reallocated
        if frame is None:
            return None
        if frame is buf:
            self.decoded_into += 1
        else:
            self.pageable += 1
            self.learn(frame)
        return frame

    def close(self) -> None:
        """Free the buffers not lent out; lent ones are freed as they come back."""
        with self._lock:
            self._closed = True
            old, self._free = self._free, []
        for buf in old:
            self.memory.free_frame_buffer(buf)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.ctypes.data == b.ctypes.data


def frame_pool_for(preprocessor: object, size: int, name: str) -> Optional[FramePool]:
    """A pool when the preprocessor lends frame memory (CUDA), else None (CPU: plain arrays)."""
    if isinstance(preprocessor, FrameMemory):
        return FramePool(preprocessor, size, name)
    return None
