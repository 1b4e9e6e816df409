"""Talking to systemd: the sd_notify(3) protocol and sd_watchdog_enabled(3).

systemd-python's ``systemd.daemon.notify`` is used when it is importable; otherwise the protocol is spoken
directly: one datagram per message to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
names the abstract namespace). Without ``$NOTIFY_SOCKET`` (not run by systemd) every call is a no-op.
Sending must never take the daemon down: an error is logged once, then only at debug level.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping, Optional

log = logging.getLogger(__name__)

# systemd reads at most one datagram of a few KiB; a STATUS line longer than this is cut
MAX_STATUS_CHARS = 1000
SEND_TIMEOUT_S = 1.0


def notify_address(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The socket address systemd asked us to notify (``$NOTIFY_SOCKET``), or None."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET") or None
    return addr


def watchdog_interval(
    environ: Optional[Mapping[str, str]] = None, pid: Optional[int] = None
) -> Optional[float]:
    """The watchdog timeout in seconds, or None when systemd expects no pings from this process.

    As sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` set (a positive integer) and ``$WATCHDOG_PID`` unset or
    equal to our pid (a different pid means the variables were meant for a process further up the tree).
    Ping at half of this interval.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw_usec)
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            wanted = int(raw_pid)
        except ValueError:
            log.warning("ignoring the watchdog: WATCHDOG_PID=%r is not a pid", raw_pid)
            return None
        if wanted != (os.getpid() if pid is None else pid):
            return None
    return usec / 1_000_000.0


def _clean(text: str) -> str:
    # a newline would end the assignment and let the rest be read as another one (e.g. "READY=1")
    one_line = " ".join(text.split())
    if len(one_line) > MAX_STATUS_CHARS:
        one_line = one_line[: MAX_STATUS_CHARS - 3] + "..."
    return one_line


def _libsystemd_notify() -> Optional[Callable[[str], bool]]:
    """systemd-python's notify when it is installed (and is that package, not a namesake)."""
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    fn = getattr(daemon, "notify", None)
    # the unrelated PyPI package "systemd" (cysystemd) also has systemd.daemon.notify, taking an enum;
    # python-systemd's is the one that comes with ``booted`` and ``_listen_fds``
    if fn is None or not hasattr(daemon, "booted") or not hasattr(daemon, "_listen_fds"):
        return None
    return fn  # type: ignore[no-any-return]


class Notifier:
    """Sends READY/STATUS/WATCHDOG/RELOADING/STOPPING to systemd; safe from any thread.

    ``environ`` defaults to the process environment, read once here (not at import). With
    ``use_libsystemd=None`` systemd-python is used when importable and ``environ`` is the real
    environment (libsystemd reads ``$NOTIFY_SOCKET`` itself); ``False`` always speaks the protocol here.
    """

    def __init__(
        self, environ: Optional[Mapping[str, str]] = None, use_libsystemd: Optional[bool] = None
    ) -> None:
        self.address = notify_address(environ)
        self._environ = environ
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._warned = False
        self.sent = 0
        self.failed = 0
        self._lib: Optional[Callable[[str], bool]] = None
        if self.address is not None and use_libsystemd is not False and environ is None:
            self._lib = _libsystemd_notify()
            if self._lib is None and use_libsystemd:
                log.warning("systemd-python is not importable; speaking the notify protocol directly")

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications (``$NOTIFY_SOCKET`` set)."""
        return self.address is not None

    @property
    def via(self) -> str:
        """Which path sends: "systemd-python", "socket" or "none"."""
        if self.address is None:
            return "none"
        return "systemd-python" if self._lib is not None else "socket"

    # -- the messages ----------------------------------------------------------------------------
    def ready(self, status: Optional[str] = None) -> bool:
        return self.send("READY=1" + (f"\nSTATUS={_clean(status)}" if status else ""))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_clean(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match this to the SIGHUP it sent;
        # older systemd ignores the field and honours RELOADING=1 for Type=notify as well
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self, status: Optional[str] = None) -> bool:
        return self.send("STOPPING=1" + (f"\nSTATUS={_clean(status)}" if status else ""))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (EXTEND_TIMEOUT_USEC, systemd >= 236), e.g. during an engine build."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> Optional[float]:
        """Watchdog timeout in seconds from this notifier's environment (see ``watchdog_interval``)."""
        return watchdog_interval(self._environ)

    # -- transport -------------------------------------------------------------------------------
    def send(self, message: str) -> bool:
        """Send one datagram (``KEY=VALUE`` lines); False when not sent. Never raises."""
        if self.address is None:
            return False
        try:
            if self._lib is not None:
                ok = bool(self._lib(message))
                if not ok:
                    raise OSError("sd_notify() reported that nothing was sent")
            else:
                self._send_datagram(message.encode("utf-8"))
        except Exception as exc:  # a notification must never crash the daemon
            self.failed += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify systemd at %s (%s); further failures are logged at debug level",
                    self.address,
                    exc,
                )
            else:
                log.debug("systemd notification failed: %s", exc)
            return False
        self.sent += 1
        return True

    def _send_datagram(self, data: bytes) -> None:
        address = self.address
        if address is None:  # pragma: no cover - checked by send()
            return
        if address.startswith("@"):
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            # vsock (vsock:CID:PORT, systemd >= 253) and anything else are left to libsystemd
            raise OSError(f"unsupported NOTIFY_SOCKET address {address!r} (install systemd-python)")
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # a full receive queue must not freeze the caller (the watchdog thread, the main loop)
                self._sock.settimeout(SEND_TIMEOUT_S)
            # sendto, not connect: systemd re-binds the socket when it re-executes, a connected
            # socket would keep pointing at the old one
            self._sock.sendto(data, address)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __repr__(self) -> str:
        return f"Notifier(address={self.address!r}, via={self.via!r})"
