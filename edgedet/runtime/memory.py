"""Giving freed heap memory back to the operating system (glibc's malloc_trim).

Every opening of a camera runs in a fresh reader thread; the decoder's buffers are freed when the stream
closes, but glibc keeps the freed pages of its per-thread arenas mapped, so a daemon whose cameras drop and
come back grows its RSS by megabytes per reconnect although nothing leaks. ``trim_heap()`` (called by the
supervisor now and then) returns those pages. A no-op where the C library has no malloc_trim (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Optional

_LOCK = threading.Lock()
_TRIM: Any = None
_LOOKED_UP = False


def _malloc_trim() -> Optional[Any]:
    global _TRIM, _LOOKED_UP
    with _LOCK:
        if not _LOOKED_UP:
            _LOOKED_UP = True
            name = ctypes.util.find_library("c")
            try:
                libc = ctypes.CDLL(name) if name else None
            except OSError:
                libc = None
            trim = getattr(libc, "malloc_trim", None) if libc is not None else None
            if trim is not None:
                trim.argtypes = [ctypes.c_size_t]
                trim.restype = ctypes.c_int
            _TRIM = trim
        return _TRIM


def trim_heap() -> bool:
    """Return free heap pages to the OS; True when something was released."""
    trim = _malloc_trim()
    if trim is None:
        return False
    return bool(trim(0))
