"""Logging that repeats a recurring problem at most once per interval, with a count of the repeats."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Dict, Tuple


class RateLimitedLog:
    """``warning("key", msg, *args)`` logs at once the first time, then at most every ``interval_s``
    per key, adding how many were held back. Thread-safe; never raises."""

    def __init__(self, logger: logging.Logger, interval_s: float = 30.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._seen: Dict[str, Tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _emit(self, level: int, key: str, msg: str, args: Tuple[Any, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (-1e18, 0))
            if now - last < self._interval:
                self._seen[key] = (last, held + 1)
                return
            self._seen[key] = (now, 0)
        if held:
            msg = msg + " (%d similar message(s) held back)"
            args = (*args, held)
        # logging must never take a paho callback or the outbox writer down
        with contextlib.suppress(Exception):
            self._log.log(level, msg, *args)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self._emit(logging.WARNING, key, msg, args)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self._emit(logging.ERROR, key, msg, args)

    def info(self, key: str, msg: str, *args: Any) -> None:
        self._emit(logging.INFO, key, msg, args)

    def reset(self, key: str) -> None:
        """Forget a key (the problem went away), so its next occurrence is logged at once."""
        with self._lock:
            self._seen.pop(key, None)
