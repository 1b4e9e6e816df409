"""A video file or a single image, looped or played once, paced like a camera or as fast as possible."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedet.errors import SourceError
from edgedet.sources.base import check_frame, load_cv2
from edgedet.sources.config import FileSource
from edgedet.sources.suffixes import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# realtime pacing when the file does not say its rate: a still image is re-sent once a second (it does
# not change; re-detecting it faster only burns CPU), a video without a rate plays at a common 25 fps
STILL_IMAGE_FPS = 1.0
UNKNOWN_VIDEO_FPS = 25.0


class FileReader:
    """Frames from ``cfg.path``; see FileSource. ``fps`` is the file's own rate (None for an image)."""

    def __init__(self, cfg: FileSource) -> None:
        self.cfg = cfg
        # realtime pacing makes the file behave like a camera: a frame the pipeline cannot take in time
        # is replaced by the next one; "fast" plays every frame, as fast as the pipeline takes them
        self.live = cfg.pace == "realtime"
        self.path = Path(os.path.expanduser(cfg.path))
        self.description = f"file {self.path}"
        self.fps: Optional[float] = None
        self.ended = False
        self._cv2: Any = None
        self._cap: Any = None
        self._image: Optional[np.ndarray] = None
        self._pending: Optional[np.ndarray] = None  # the frame read by open() to prove the file decodes
        self._image_sent = False
        self._next_due: Optional[float] = None
        self._opened = False

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_SUFFIXES

    # -- open ----------------------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        if not self.path.exists():
            raise SourceError(f"{self.description}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.description}: is a folder, not a video or image file")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"{self.description}: permission denied (not readable by this user)")
        self._cv2 = load_cv2("the file source")
        if self.is_image:
            self._open_image()
        else:
            self._open_video()
        self.ended = False
        self._next_due = None
        self._opened = True

    def _open_image(self) -> None:
        image = self._cv2.imread(str(self.path), self._cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{self.description}: cannot decode the image (corrupt or unsupported format)")
        problem = check_frame(image)
        if problem is not None:
            raise SourceError(f"{self.description}: unusable image: {problem}")
        self._image = image
        self._image_sent = False

    def _open_video(self) -> None:
        cap = self._new_capture()
        if cap is None:
            raise SourceError(
                f"{self.description}: cannot open as a video (corrupt, truncated or a format this OpenCV "
                "cannot decode)"
            )
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise SourceError(f"{self.description}: the video has no decodable frame (corrupt or empty)")
        fps = float(cap.get(self._cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None
        self._cap = cap
        self._pending = frame

    def _new_capture(self) -> Any:
        cv2 = self._cv2
        try:
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap.release()
                cap = cv2.VideoCapture(str(self.path))  # whatever other backend this OpenCV has
        except Exception as exc:  # cv2.error on some builds instead of isOpened() == False
            raise SourceError(f"{self.description}: cannot open as a video: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    # -- read ----------------------------------------------------------------------------------------
    def read(self) -> Optional[np.ndarray]:
        return self.read_into(None)

    def read_into(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The next frame, decoded into ``out`` when it has the frame's shape (see ReadsInto)."""
        if not self._opened:
            raise SourceError(f"{self.description}: read() before open()")
        if self.ended:
            return None
        frame = self._read_image(out) if self.is_image else self._read_video(out)
        if frame is None:
            return None
        if self.cfg.pace == "realtime":
            self._pace()
        return frame

    def _read_image(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if self._image_sent and not self.cfg.loop:
            self.ended = True
            return None
        self._image_sent = True
        # a copy either way: a consumer may draw on it; the original stays clean for the next loop
        return _copy_into(self._image, out)

    def _read_video(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame if out is None else _copy_into(frame, out)
        if self._cap is None:  # a loop whose reopen failed: the worker reopens the whole reader
            return None
        decoded = self._decode(out)
        if decoded is not None:
            return decoded
        if not self.cfg.loop:
            self.ended = True
            return None
        return self._rewind(out)

    def _decode(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        # OpenCV writes into ``out`` when its shape and dtype fit, else returns a new array
        ok, frame = self._cap.read() if out is None else self._cap.read(image=out)
        return frame if ok and frame is not None else None

    def _rewind(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        # seeking to frame 0 is cheap but not honoured by every container; reopening always works
        if self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0):
            frame = self._decode(out)
            if frame is not None:
                return frame
        self._cap.release()
        self._cap = self._new_capture()
        if self._cap is None:
            log.warning("%s: cannot reopen the file to loop it", self.description)
            return None
        return self._decode(out)

    def _pace(self) -> None:
        """Hold each frame until its due time at the file's rate; never try to catch up in a burst."""
        fps = self.fps or (STILL_IMAGE_FPS if self.is_image else UNKNOWN_VIDEO_FPS)
        interval = 1.0 / fps
        now = time.monotonic()
        if self._next_due is None or now - self._next_due > interval:
            self._next_due = now  # first frame, or we fell behind by more than a frame: restart the clock
        delay = self._next_due - now
        if delay > 0:
            time.sleep(delay)
        self._next_due += interval

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._image = None
        self._pending = None
        self._opened = False

    def __enter__(self) -> FileReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy_into(image: Optional[np.ndarray], out: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if image is None:
        return None
    if out is not None and out.shape == image.shape and out.dtype == image.dtype:
        np.copyto(out, image)
        return out
    return image.copy()
