"""A throw-away mosquitto on a free loopback port for the developer tools (benchmarks, torture, fleet):
optionally persistent, so that sessions and queued messages survive ``restart()``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM (so a server can save its state), SIGKILL if it is still there after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Broker:
    def __init__(
        self,
        workdir: Path,
        *,
        port: Optional[int] = None,
        persistence: bool = False,
        max_inflight: int = 100,
        extra: Optional[List[str]] = None,
    ) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        self.persistence = persistence
        self.max_inflight = max_inflight
        self.extra = list(extra or [])
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def _conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            # as root mosquitto drops to its own user, which may not write our folder
            *(["user root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest none",
            # mosquitto's default (20) caps one client near 2,000 durable msgs/s; 100 is the outbox's
            f"max_inflight_messages {self.max_inflight}",
            "max_queued_messages 1000000",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines + self.extra) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Broker:
        conf = self._conf()
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file before it exits."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, 15)

    def restart(self) -> None:
        self.stop()
        self.start()
