"""The frame-reader protocol every source implements, and what the OpenCV-based readers share.

A reader is created unopened (no I/O), opened once with ``open()`` (which raises SourceError with a
one-line message a user can act on), then ``read()`` until it returns None, then ``close()``.
Readers are used from one thread at a time; the capture worker gives each its own reader thread.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Optional

import numpy as np

from edgedet.errors import SourceError, require

try:
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore[assignment]

log = logging.getLogger(__name__)


class FrameReader(Protocol):
    """One source of BGR frames.

    ``fps`` is the source's nominal frame rate (None when unknown), known after ``open()``.
    ``description`` names the source for logs and status, with any password removed.
    ``live``: True for cameras and streams (frames not taken in time are replaced by newer ones);
    False for files (every frame is handed on, the reader waits).
    ``ended``: True once a finite source (a file played once) has delivered its last frame; live sources
    never end, a None from them means the stream failed.
    """

    fps: Optional[float]
    description: str
    live: bool
    ended: bool

    def open(self) -> None:
        """Open the source (idempotent); raise SourceError (or DependencyError) when it cannot be used."""

    def read(self) -> Optional[np.ndarray]:
        """The next HxWx3 uint8 BGR frame, or None at end of stream or on a failed read."""

    def close(self) -> None:
        """Release the device/stream; safe to call twice and on a reader that never opened."""


@runtime_checkable
class ReadsInto(Protocol):
    """A reader that can decode the next frame into a given array (every reader in edgedet can)."""

    def read_into(self, out: np.ndarray) -> Optional[np.ndarray]:
        """Like ``read()``, written into ``out`` when the frame has out's shape: then the result *is*
        ``out``. A frame of another size comes back in a new array (``out`` may then hold garbage)."""


def load_cv2(what: str) -> Any:
    """OpenCV, imported only when a source needs it."""
    return require("cv2", "cv", what)


def open_video_capture(cv2: Any, target: Any, api: int, description: str, not_opened: str) -> Any:
    """``cv2.VideoCapture(target, api)`` opened, or a SourceError naming the source.

    ``not_opened`` says why an unopened capture is likely (it depends on the kind of source).
    """
    try:
        cap = cv2.VideoCapture(target, api)
    except Exception as exc:  # cv2.error on some builds instead of isOpened() == False
        raise SourceError(f"{description}: cannot open: {exc}") from exc
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{description}: {not_opened}")
    return cap


def opencv_has_gstreamer(cv2: Any) -> bool:
    """Whether this OpenCV build has the GStreamer video I/O backend (pip's wheels do not)."""
    try:
        info = cv2.getBuildInformation()
    except Exception:  # an OpenCV without build information cannot be trusted with a pipeline either
        return False
    match = re.search(r"^\s*GStreamer:\s*(\S+)", info, re.MULTILINE)
    return match is not None and match.group(1).upper() not in ("NO", "OFF")


def opencv_origin(cv2: Any) -> str:
    return f"OpenCV {getattr(cv2, '__version__', '?')} from {getattr(cv2, '__file__', '?')}"


def require_gstreamer(cv2: Any, what: str) -> None:
    """Raise a clear SourceError when ``what`` needs GStreamer and this OpenCV lacks it."""
    if not opencv_has_gstreamer(cv2):
        raise SourceError(
            f"{what} needs OpenCV built with GStreamer, but {opencv_origin(cv2)} has no GStreamer "
            "support (pip's opencv-python wheels never do); on a Jetson uninstall pip's opencv and use "
            "JetPack's system OpenCV, or use an ffmpeg/file/v4l2 source instead"
        )


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T): the release file or the device-tree model says so."""
    if os.path.exists("/etc/nv_tegra_release"):
        return True
    for path in ("/proc/device-tree/compatible", "/proc/device-tree/model"):
        try:
            with open(path, "rb") as fh:
                text = fh.read(4096).decode("ascii", errors="replace").lower()
        except OSError:
            continue
        if "tegra" in text or "jetson" in text:
            return True
    return False


_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s\"']*):[^/\s\"']*@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)


def check_frame(frame: object) -> Optional[str]:
    """None when ``frame`` is a usable HxWx3 uint8 image, else what is wrong with it."""
    if not isinstance(frame, np.ndarray):
        return f"not an image ({type(frame).__name__})"
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        return f"wrong shape {tuple(frame.shape)} (expected HxWx3)"
    if frame.dtype != np.uint8:
        return f"wrong dtype {frame.dtype} (expected uint8)"
    return None


class CvCaptureReader:
    """Shared part of the readers built on ``cv2.VideoCapture``: subclasses implement ``_open_capture``.

    ``_open_capture`` returns an opened VideoCapture or raises SourceError; ``read`` returns a frame
    or None (a failed grab); ``close`` releases the capture.
    """

    live = True

    def __init__(self, description: str) -> None:
        self.description = description
        self.fps: Optional[float] = None
        self.ended = False
        self._cap: Any = None
        self._lock = threading.Lock()  # close() may come from another thread than read()

    def _open_capture(self, cv2: Any) -> Any:
        raise NotImplementedError

    def open(self) -> None:
        if self._cap is not None:
            return
        cv2 = load_cv2(f"the {self.description} source")
        cap = self._open_capture(cv2)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None  # some backends report 0 or 90000 when unknown
        self._cap = cap

    def read(self) -> Optional[np.ndarray]:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.description}: read() before open()")
        ok, frame = cap.read()
        if not ok or frame is None:
            return None
        return frame  # type: ignore[no-any-return]

    def read_into(self, out: np.ndarray) -> Optional[np.ndarray]:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.description}: read() before open()")
        # OpenCV writes into ``out`` when its shape and dtype fit, else returns a new array
        ok, frame = cap.read(image=out)
        if not ok or frame is None:
            return None
        return frame  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception as exc:  # releasing a broken stream must not take the worker down
                log.warning("%s: release failed: %s", self.description, exc)

    def __enter__(self) -> CvCaptureReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
