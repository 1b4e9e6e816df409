"""Plays systemd's part for a daemon under test: a real AF_UNIX datagram socket as $NOTIFY_SOCKET.

``FakeSystemd(tmp_path)`` binds a socket file in ``tmp_path`` (``abstract=True``: an abstract-namespace
socket, ``$NOTIFY_SOCKET=@name``), records every datagram with its arrival time (time.monotonic()) and the
sender's pid (SO_PASSCRED, as systemd does for NotifyAccess=main), and starts processes with
NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID set the way systemd sets them (WATCHDOG_PID is the pid of the
started program itself: the spawn goes through ``sh -c 'WATCHDOG_PID=$$ ... exec "$@"'``).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass
class Notification:
    time: float  # time.monotonic() at arrival
    pid: Optional[int]  # sender's pid from SCM_CREDENTIALS
    raw: str
    fields: Dict[str, str] = field(default_factory=dict)

    def matches(self, assignment: str) -> bool:
        """``"READY=1"`` matches that exact assignment; ``"STATUS="`` (nothing after =) any STATUS."""
        key, _, value = assignment.partition("=")
        if key not in self.fields:
            return False
        return value == "" or self.fields[key] == value


def _parse(raw: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in raw.split("\n"):
        if "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


class FakeSystemd:
    def __init__(self, directory: Path, abstract: bool = False) -> None:
        self.abstract = abstract
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.path: Optional[Path] = None
        if abstract:
            name = f"edgedet-test-{uuid.uuid4().hex[:12]}"
            self._sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = Path(directory) / "notify.sock"
            if path.exists():
                path.unlink()
            self._sock.bind(str(path))
            self.address = str(path)
            self.path = path
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.settimeout(0.1)
        self._messages: List[Notification] = []
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="fake-systemd", daemon=True)
        self._thread.start()

    # -- the socket side -----------------------------------------------------------------------------
    def _collect(self) -> None:
        cmsg_size = socket.CMSG_SPACE(_UCRED.size)
        while not self._closed.is_set():
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(65536, cmsg_size)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            pid = None
            for level, kind, payload in ancdata:
                if (
                    level == socket.SOL_SOCKET
                    and kind == socket.SCM_CREDENTIALS
                    and len(payload) >= _UCRED.size
                ):
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
            raw = data.decode("utf-8", errors="replace")
            with self._cond:
                self._messages.append(Notification(now, pid, raw, _parse(raw)))
                self._cond.notify_all()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._sock.close()
        if not self.abstract and self.path is not None and self.path.exists():
            self.path.unlink()

    def __enter__(self) -> FakeSystemd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- starting a process --------------------------------------------------------------------------
    def env(
        self,
        base: Optional[Mapping[str, str]] = None,
        watchdog_usec: Optional[int] = None,
        watchdog_pid: Optional[int] = None,
    ) -> Dict[str, str]:
        """An environment with NOTIFY_SOCKET (and the watchdog variables when given)."""
        env = dict(os.environ if base is None else base)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = self.address
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        if watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(watchdog_pid)
        return env

    def spawn(
        self,
        argv: Sequence[str],
        watchdog_usec: Optional[int] = None,
        watchdog_pid: Union[int, str, None] = "self",
        env: Optional[Mapping[str, str]] = None,
        **popen_kwargs: object,
    ) -> subprocess.Popen:  # type: ignore[type-arg]
        """Start ``argv`` as systemd would start a Type=notify service's main process.

        ``watchdog_pid``: "self" (systemd's way: the started program's own pid), a pid, or None (unset).
        """
        pid_arg = None if watchdog_pid == "self" else watchdog_pid
        full_env = self.env(env, watchdog_usec, pid_arg if isinstance(pid_arg, int) else None)
        if watchdog_usec is not None and watchdog_pid == "self":
            # $$ of this shell is the pid the program keeps after exec: what systemd puts in WATCHDOG_PID
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *argv]
        return subprocess.Popen(list(argv), env=full_env, **popen_kwargs)  # type: ignore[call-overload]

    # -- what arrived --------------------------------------------------------------------------------
    @property
    def messages(self) -> List[Notification]:
        with self._cond:
            return list(self._messages)

    def wait_for_notification(self, assignment: str, timeout: float, start: int = 0) -> Notification:
        """The first message at index >= ``start`` that matches ``assignment``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self._messages[start:]:
                    if msg.matches(assignment):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {assignment!r} within {timeout} s; got: {[m.raw for m in self._messages]}"
                    )
                self._cond.wait(left)

    def index_of(self, msg: Notification) -> int:
        with self._cond:
            return next(i for i, m in enumerate(self._messages) if m is msg)

    def assert_sequence(
        self, assignments: Sequence[str], timeout: float, start: int = 0
    ) -> List[Notification]:
        """Wait until ``assignments`` have arrived in this order (other messages may come between)."""
        deadline = time.monotonic() + timeout
        found: List[Notification] = []
        index = start
        for assignment in assignments:
            msg = self.wait_for_notification(assignment, max(0.0, deadline - time.monotonic()), index)
            found.append(msg)
            index = self.index_of(msg) + 1
        return found

    def pings(self, since: float = 0.0) -> List[float]:
        """Arrival times of WATCHDOG=1 messages after ``since`` (time.monotonic())."""
        return [m.time for m in self.messages if m.matches("WATCHDOG=1") and m.time > since]

    def wait_pings(self, count: int, timeout: float, since: float = 0.0) -> List[float]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m.time for m in self._messages if m.matches("WATCHDOG=1") and m.time > since]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(got)} of {count} WATCHDOG=1 pings within {timeout} s")
                self._cond.wait(left)
