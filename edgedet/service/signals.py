"""Signals: SIGTERM/SIGINT ask for a graceful stop, a second one exits at once, SIGHUP asks for a reload.

Nothing is done inside a signal handler. The Python-level handlers are empty; CPython's C-level handler
writes the signal number to a wake-up pipe (``signal.set_wakeup_fd``) the moment the signal arrives, and
the thread ``signals`` reads it and sets ``threading.Event``s. So:

* no lock is ever taken in signal context (``Event.set()`` from a handler can deadlock when the main
  thread happens to hold the same Event's lock);
* the second SIGTERM exits at once even while the main thread is stuck in a long call that releases the
  GIL (engine build, join), because the reader thread, not the main thread, acts on it.

A second stop signal ends the process with ``os._exit(IMMEDIATE_EXIT_CODE)`` (1): nothing is flushed,
the outbox keeps what it had (SQLite is crash-safe), and exit code 1 tells systemd and scripts the stop was
not graceful (Restart=on-failure does not restart a unit systemd itself is stopping).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Dict, Optional, Type, Union

log = logging.getLogger(__name__)

IMMEDIATE_EXIT_CODE = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS = (signal.SIGHUP,)

_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]


def _empty_handler(signum: int, frame: Optional[FrameType]) -> None:
    """Installed so that CPython's C handler runs and writes to the wake-up fd; the work is elsewhere."""


class SignalEvents:
    """Turns signals into Events: ``stop_requested``, ``reload_requested``.

    ``install()`` must run in the main thread (Python's rule for ``signal.signal``); ``uninstall()``
    restores the previous handlers. Use ``wait(timeout)`` in the main loop to sleep until a signal
    comes, ``take_reload()`` to consume a reload request.
    """

    def __init__(self, exit_fn: Callable[[int], Any] = os._exit) -> None:
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.stop_signal: Optional[int] = None  # the signal that asked for the stop (None: programmatic)
        self.stop_reason = ""
        self._exit = exit_fn
        self._wake = threading.Event()
        self._stop_count = 0
        self._lock = threading.Lock()
        self._rfd = -1
        self._wfd = -1
        self._old_wakeup_fd = -1
        self._old_handlers: Dict[int, _Handler] = {}
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def install(self) -> SignalEvents:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        if self._thread is not None:
            return self
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)  # required by set_wakeup_fd; a full pipe drops, never blocks
        for sig in STOP_SIGNALS + RELOAD_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, _empty_handler)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        if self._old_wakeup_fd != -1:
            log.warning(
                "replacing another signal wake-up fd (%d); it is restored on exit", self._old_wakeup_fd
            )
        self._thread = threading.Thread(target=self._read_loop, name="signals", daemon=True)
        self._thread.start()
        return self

    def uninstall(self) -> None:
        if self._thread is None:
            return
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        os.close(self._wfd)  # the reader sees end-of-file and ends
        self._thread.join(2.0)
        os.close(self._rfd)
        self._rfd = self._wfd = -1
        self._thread = None

    def __enter__(self) -> SignalEvents:
        return self.install()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.uninstall()

    # short names for the two events
    @property
    def stop(self) -> threading.Event:
        return self.stop_requested

    @property
    def reload(self) -> threading.Event:
        return self.reload_requested

    # -- for the main loop -----------------------------------------------------------------------
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Sleep until a signal arrives or ``timeout`` passes; True when a stop or reload is pending."""
        self._wake.wait(timeout)
        self._wake.clear()
        return self.stop_requested.is_set() or self.reload_requested.is_set()

    def take_reload(self) -> bool:
        """True once per SIGHUP burst (several SIGHUPs before the reload ran count as one)."""
        if self.reload_requested.is_set() and not self.stop_requested.is_set():
            self.reload_requested.clear()
            return True
        return False

    def request_stop(self, reason: str) -> None:
        """Ask for a graceful stop from code (e.g. the supervisor giving up on a stage)."""
        with self._lock:
            if not self.stop_requested.is_set():
                self.stop_reason = reason
                self.stop_requested.set()
        self._wake.set()

    # -- the reader thread -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while True:
            try:
                data = os.read(self._rfd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                self._handle(signum)

    def _handle(self, signum: int) -> None:
        name = _signal_name(signum)
        if signum in STOP_SIGNALS:
            with self._lock:
                self._stop_count += 1
                count = self._stop_count
                first = not self.stop_requested.is_set()
                if first:
                    self.stop_signal = signum
                    self.stop_reason = f"received {name}"
                    self.stop_requested.set()
            if count >= 2:
                # a plain write: logging handlers may be blocked by the very thing that hangs the stop
                msg = f"edgedet: second stop signal ({name}): exiting at once (exit {IMMEDIATE_EXIT_CODE})\n"
                try:
                    os.write(2, msg.encode())
                finally:
                    self._exit(IMMEDIATE_EXIT_CODE)
                return
            log.info("%s: stopping gracefully (send it again to exit at once)", name)
        elif signum in RELOAD_SIGNALS:
            if self.stop_requested.is_set():
                log.info("%s ignored: stopping", name)
                return
            log.info("%s: reloading the configuration", name)
            self.reload_requested.set()
        else:
            return
        self._wake.set()


def install_signal_handlers() -> SignalEvents:
    """Install the handlers (main thread only) and return the events; ``uninstall()`` restores them."""
    return SignalEvents().install()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
