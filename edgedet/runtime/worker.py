"""Long-lived named threads that loop on a stop event, record heartbeats and keep their exception.

The supervisor polls ``failure`` and ``heartbeat_age``: a worker that raised is restarted or ends the
daemon non-zero; one whose heartbeat is stale stops the systemd watchdog pings.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from edgedet.errors import EdgedetError

log = logging.getLogger(__name__)


class Worker:
    """Subclass and implement ``step`` (one bounded unit of work; must return within about a second).

    ``setup``/``teardown`` run in the worker's own thread (CUDA contexts must be pushed there).
    """

    def __init__(self, name: str, thread_name: Optional[str] = None) -> None:
        self.name = name
        self.thread_name = thread_name or name  # a reader named "sysfs" runs in "telemetry-sysfs"
        self.stop_event = threading.Event()
        self.failure: Optional[BaseException] = None
        self._heartbeat = time.monotonic()
        self._thread: Optional[threading.Thread] = None

    # -- to override ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Runs once in the worker thread before the first step."""

    def step(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Runs once in the worker thread after the last step, even after a failure."""

    # -- lifecycle -----------------------------------------------------------------------------
    def beat(self) -> None:
        self._heartbeat = time.monotonic()

    @property
    def heartbeat_age(self) -> float:
        return time.monotonic() - self._heartbeat

    def start(self) -> None:
        self.stop_event.clear()
        self.failure = None
        self.beat()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread to end; True when it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> Optional[threading.Thread]:
        """The running thread; None before start and once it has ended."""
        return self._thread if self.alive else None

    def _run(self) -> None:
        try:
            self.setup()
            while not self.stop_event.is_set():
                self.step()
                self.beat()
        except BaseException as exc:  # kept for the supervisor; never lost in a dead thread
            self.failure = exc
            # a user-facing error (missing file, dead camera) needs its message, not a traceback
            log.error("worker %s failed: %s", self.name, exc, exc_info=not isinstance(exc, EdgedetError))
        finally:
            try:
                self.teardown()
            except Exception:
                log.exception("worker %s: teardown failed", self.name)
