"""Harness for running the real daemon as a subprocess under a fake systemd, with a real subscriber."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from tests.support.broker import Mosquitto
from tests.support.fake_systemd import FakeSystemd

REPO = Path(__file__).resolve().parents[2]
DEVICE = "test-dev"
WATCHDOG_S = 3.0
START_TIMEOUT = 90.0


def daemon_config(
    tmp_path: Path, broker: Mosquitto, cameras: Tuple[str, ...] = ("front",), **extra: Any
) -> Dict:
    data: Dict[str, Any] = {
        "version": 1,
        "device_id": DEVICE,
        "log_level": "info",
        "state_dir": str(tmp_path / "state"),
        "model": {"path": str(DEMO_MODEL)},
        "backend": {"type": "onnxruntime", "threads": 1},
        "cameras": [
            {
                "name": name,
                "source": {"type": "file", "path": str(DEMO_CLIP), "loop": True, "pace": "realtime"},
                "max_fps": 4,  # two cores for the whole suite: keep the daemon light
            }
            for name in cameras
        ],
        "mqtt": {"host": broker.host, "port": broker.port},
        "telemetry": {"type": "none"},
        "stats": {"interval_s": 1},
        "service": {"heartbeat_timeout_s": 1.0, "stop_timeout_s": 5},
        "http": {"listen": "127.0.0.1:0"},  # a free port: daemons of parallel runs never collide
    }
    data.update(extra)
    return data


class Subscriber:
    """A real MQTT client recording every message under edgedet/<device>/#."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt

        self.messages: List[Tuple[float, str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.on_connect = lambda c, *a: c.subscribe(f"edgedet/{DEVICE}/#", qos=1)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(10), "test subscriber could not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait(
        self, topic_suffix: str, timeout: float, since: float = 0.0, contains: Optional[bytes] = None
    ) -> bytes:
        deadline = time.monotonic() + timeout
        topic = f"edgedet/{DEVICE}/{topic_suffix}"
        with self._cond:
            while True:
                for t, tp, payload, _ in self.messages:
                    if tp == topic and t > since and (contains is None or contains in payload):
                        return payload
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({tp for _, tp, _, _ in self.messages})
                    raise AssertionError(f"nothing on {topic} within {timeout} s; topics seen: {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class RunningDaemon:
    def __init__(self, tmp_path: Path, broker: Mosquitto, config: Dict) -> None:
        self.config_path = tmp_path / "edgedet.yaml"
        self.write(config)
        self.fake = FakeSystemd(tmp_path)
        self.log_path = tmp_path / "daemon.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("JOURNAL_STREAM", None)
        self.proc = self.fake.spawn(
            [sys.executable, "-m", "edgedet", "run", "--config", str(self.config_path)],
            watchdog_usec=int(WATCHDOG_S * 1_000_000),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(tmp_path),
        )

    def write(self, config: Dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> int:
        """Index of the READY=1 message."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()
                raise AssertionError(f"daemon exited {self.proc.returncode} before READY=1:\n{text[-3000:]}")
            try:
                ready = self.fake.wait_for_notification("READY=1", timeout=0.5)
                return self.fake.index_of(ready)
            except AssertionError:
                continue
        raise AssertionError(f"no READY=1 within {START_TIMEOUT} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.fake.close()
        self._log.close()
