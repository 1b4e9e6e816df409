"""A real Prometheus server (Debian's `prometheus` package), started by tests on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgedet.devtools.broker import stop_process
from tests.support.broker import free_port, wait_port
from tests.support.waiting import wait_for


def prometheus_exe() -> Optional[str]:
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    return exe if Path(exe).exists() else None


class Prometheus:
    """One Prometheus scraping ``targets`` every ``interval_s``, with its storage in ``workdir``."""

    def __init__(self, workdir: Path, targets: List[str], interval_s: float = 1.0) -> None:
        exe = prometheus_exe()
        if exe is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.exe = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
            "scrape_configs": [
                {
                    "job_name": "edgedet",
                    "static_configs": [{"targets": list(targets)}],
                    "scrape_timeout": "1s",
                }
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> Prometheus:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_port(self.port, timeout=30):
            self.stop()
            raise RuntimeError(
                f"prometheus did not listen on {self.port}: {self.log_path.read_text()[-2000:]}"
            )
        # it listens before its storage is open and answers the API with 503 until then
        wait_for(self._ready, 60, f"prometheus to be ready ({self.log_path})")
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                return int(r.status) == 200
        except OSError:  # URLError/HTTPError (503 while starting) are OSErrors
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read().decode())
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> Dict[str, float]:
        """An instant query: {label set as text: value}."""
        out = {}
        for item in self.api("query", query=expr)["result"]:
            labels = ",".join(f"{k}={v}" for k, v in sorted(item["metric"].items()) if k != "__name__")
            out[labels] = float(item["value"][1])
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
