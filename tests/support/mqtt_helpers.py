"""Helpers for the MQTT/outbox tests: fast-reconnect configs, a real subscriber, a publisher subprocess."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgedet.devtools.watch import Watcher
from edgedet.publish.config import MqttConfig
from edgedet.publish.messages import ModelInfo, PresenceEvent
from edgedet.types import Detection, DetectionResult
from tests.support.waiting import wait_for as wait_for  # the one polling helper, for the MQTT tests

REPO = Path(__file__).resolve().parent.parent.parent
MODEL = ModelInfo("yolox_nano", "yolox", "fp32", "onnxruntime", 416, 416)


def persistent_broker(factory: Any, **kw: Any) -> Any:
    """A broker that keeps sessions and queued messages across restart() (tests/support/broker.py keeps
    it running as root when the tests are, so it can write its database in pytest's 0700 folders)."""
    return factory(persistence=True, **kw).start()


def publisher_cfg(port: int, **over: Any) -> MqttConfig:
    """A config for a broker on 127.0.0.1:port that reconnects fast (tests stop brokers)."""
    base: Dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "keepalive_s": 5,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    base.update(over)
    return MqttConfig.model_validate(base)


def result(
    camera: str, frame: int, classes: Sequence[str] = ("person",), t: Optional[float] = None
) -> DetectionResult:
    dets = tuple(
        Detection(10.0 + 5 * i, 20.0, 110.0 + 5 * i, 220.0, 0.8, 0 if c == "person" else 2, c)
        for i, c in enumerate(classes)
    )
    now = time.time() if t is None else t
    return DetectionResult(
        camera, frame, now, time.monotonic(), 640, 480, dets, {"preprocess": 1.5, "inference": 20.0}
    )


def event(camera: str, i: int, kind: str = "appeared") -> PresenceEvent:
    t = time.time()
    return PresenceEvent(camera, kind, 0, "person", t, i, 1, 0.9, t - 1.0, t)


def subscriber(port: int, **kw: Any) -> Watcher:
    """A real subscriber on ``edgedet/#`` (QoS 1) that keeps every decoded message; waits for SUBACK."""
    w = Watcher("127.0.0.1", port, kw.pop("prefix", "edgedet"), quiet=True, **kw)
    w.keep = True
    w.start()
    if not w.subscribed.wait(10):
        w.stop()
        raise RuntimeError(f"subscriber could not subscribe on port {port}")
    return w


class PublisherProc:
    """tests/support/mqtt_publisher_proc.py in a subprocess, driven by line commands."""

    def __init__(
        self, cfg: MqttConfig, state_dir: Path, device_id: str = "dev1", env: Optional[Dict[str, str]] = None
    ) -> None:
        cfg_path = state_dir.parent / f"{state_dir.name}-cfg.json"
        state_dir.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(cfg.model_dump_json())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.mqtt_publisher_proc",
                str(cfg_path),
                str(state_dir),
                device_id,
            ],
            cwd=str(REPO),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: List[str] = []
        threading.Thread(target=self._read, name="test-publisher-reader", daemon=True).start()
        try:
            first = self.lines.get(timeout=20)
        except queue.Empty:
            first = ""
        if first != "started":
            self.close()
            raise AssertionError("publisher process did not start:\n" + "\n".join(self.log[-30:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            if line.startswith(">"):
                self.lines.put(line[1:].strip())

    def cmd(self, line: str, timeout: float = 15.0) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to {line!r}; output:\n" + "\n".join(self.log[-30:])) from None

    def status(self) -> Dict[str, Any]:
        return json.loads(self.cmd("status"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
