"""A real mosquitto broker, started on a free loopback port by the tests (never the system service)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

from edgedet.devtools.broker import free_port, stop_process


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """One mosquitto process with its own config file in ``workdir``.

    ``extra`` lines are appended to the listener config (password_file, cafile ...). With
    ``persistence=True`` the broker keeps sessions and queued QoS>0 messages across ``restart()``.
    """

    def __init__(
        self,
        workdir: Path,
        port: Optional[int] = None,
        extra: Optional[List[str]] = None,
        persistence: bool = False,
        allow_anonymous: bool = True,
    ) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra = list(extra or [])
        self.persistence = persistence
        self.allow_anonymous = allow_anonymous
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.workdir / "mosquitto.log"

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            # as root, mosquitto drops to the `mosquitto` user, which cannot read pytest's 0700 temp
            # folders (persistence, password and certificate files would silently fail)
            *(["user root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        lines += self.extra
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        conf = self._write_conf()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen([self.exe, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if not wait_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log_path.read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
