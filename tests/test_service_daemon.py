"""The real daemon (`python -m edgedet run --config FILE`) under a fake systemd: a real notify socket with
WATCHDOG_USEC, a real mosquitto, the real model on the bundled clip.

* READY=1 (after the first inference), STATUS=, WATCHDOG=1 pings from the main pid; SIGTERM gives
  STOPPING=1, a retained ``offline`` status on MQTT and exit 0;
* SIGHUP with an invalid edit keeps the old config running and reports the error; with a valid edit
  (a camera added) RELOADING=1 ... READY=1 and the new camera publishes;
* a backend that hangs stops the watchdog pings within one interval;
* an RTSP camera that is down at boot: READY=1 anyway, STATUS and MQTT stats show it down with the reason
  and the next retry, and detections start once the (real) RTSP server comes up, without a restart.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from edgedet.assets import DEMO_CLIP
from tests.support.broker import Mosquitto
from tests.support.daemon_harness import DEVICE, WATCHDOG_S, RunningDaemon, Subscriber, daemon_config
from tests.support.fake_systemd import FakeSystemd
from tests.support.rtsp_server import RtspServer, unavailable_reason
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _statuses(fake: FakeSystemd, start: int = 0) -> List[str]:
    return [m.fields["STATUS"] for m in fake.messages[start:] if "STATUS" in m.fields]


def test_ready_status_watchdog_then_sigterm(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    d = RunningDaemon(tmp_path, mosquitto, daemon_config(tmp_path, mosquitto))
    try:
        ready_at = d.wait_ready()
        ready = d.fake.messages[ready_at]
        d.fake.wait_pings(3, timeout=4 * WATCHDOG_S, since=ready.time)
        d.fake.wait_for_notification("STATUS=", timeout=10, start=ready_at)
        assert any("front" in s for s in _statuses(d.fake)), _statuses(d.fake)
        # NotifyAccess=main: every datagram came from the main pid
        assert {m.pid for m in d.fake.messages} == {d.proc.pid}
        subscriber.wait("front/detections", timeout=20)

        stop_sent = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.fake.wait_for_notification("STOPPING=1", timeout=10, start=ready_at)
        assert d.proc.wait(timeout=20) == 0, d.log_text()[-3000:]  # TimeoutStopSec=20
        assert subscriber.wait("status", timeout=5, since=stop_sent, contains=b"offline")
    finally:
        d.stop()


def test_sighup_invalid_edit_keeps_old_config_then_valid_edit_applies(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    good = daemon_config(tmp_path, mosquitto)
    d = RunningDaemon(tmp_path, mosquitto, good)
    try:
        ready_at = d.wait_ready()
        subscriber.wait("front/detections", timeout=20)

        # an invalid edit: unknown key; the old config keeps running and the error is reported
        bad = dict(good, camras=[])
        d.write(bad)
        hup = time.monotonic()
        n = len(d.fake.messages)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not any("camras" in s for s in _statuses(d.fake, n)):
            assert time.monotonic() < deadline, f"no STATUS naming the error: {_statuses(d.fake, n)}"
            assert d.proc.poll() is None, d.log_text()[-3000:]
            time.sleep(0.1)
        subscriber.wait("front/detections", timeout=20, since=hup + 1.0)  # still detecting
        assert d.proc.poll() is None
        if any(m.matches("RELOADING=1") for m in d.fake.messages[n:]):
            # a reload that was announced must be closed with READY=1, or systemd stays "reloading"
            d.fake.assert_sequence(["RELOADING=1", "READY=1"], timeout=10, start=n)
        assert any(b"camras" in p for _, _, p, _ in subscriber.messages), "the error was not published"

        # a valid edit: a second camera
        d.write(daemon_config(tmp_path, mosquitto, cameras=("front", "back")))
        n = len(d.fake.messages)
        d.proc.send_signal(signal.SIGHUP)
        d.fake.assert_sequence(["RELOADING=1", "READY=1"], timeout=30, start=n)
        subscriber.wait("back/detections", timeout=30)
        assert d.fake.messages[ready_at].pid == d.proc.pid
    finally:
        d.stop()


def test_hung_backend_stops_watchdog_pings(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from edgedet.config import Config

    hang_file = tmp_path / "hang-now"
    backend = {
        "type": "python",
        "factory": "tests.support.hanging_backend:HangingBackend",
        "options": {"hang_file": str(hang_file)},
    }
    config = daemon_config(tmp_path, mosquitto, backend=backend)
    Config.model_validate(config)  # the plug-in backend type is part of the config
    d = RunningDaemon(tmp_path, mosquitto, config)
    try:
        ready_at = d.wait_ready()
        d.fake.wait_pings(2, timeout=4 * WATCHDOG_S, since=d.fake.messages[ready_at].time)
        hang_file.write_text("")
        hung_at = time.monotonic()
        time.sleep(2 * WATCHDOG_S)
        pings = d.fake.pings()
        assert pings and max(pings) - hung_at < WATCHDOG_S, "pings went on after the backend hung"
        assert d.proc.poll() is None  # still alive: ending it is systemd's job (SIGABRT, then restart)
        assert any("inference" in s for s in _statuses(d.fake, ready_at)), _statuses(d.fake, ready_at)
    finally:
        d.stop()


def _door_stats(subscriber: Subscriber) -> List[Dict[str, Any]]:
    topic = f"edgedet/{DEVICE}/stats"
    stats = [json.loads(p) for _, t, p, _ in list(subscriber.messages) if t == topic]
    return [m["cameras"]["door"] for m in stats if "door" in m["cameras"]]


def test_camera_down_at_boot_daemon_ready_then_detects_when_it_appears(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = RtspServer(DEMO_CLIP, tmp_path / "rtsp")  # its port is fixed now, it starts later
    config = daemon_config(tmp_path, mosquitto)
    config["cameras"] = [
        {
            "name": "door",
            "source": {"type": "rtsp", "url": server.url, "decoder": "ffmpeg", "open_timeout_s": 2},
            "max_fps": 4,
            "reconnect": {"initial_s": 0.5, "max_s": 2},
        }
    ]
    d = RunningDaemon(tmp_path, mosquitto, config)
    try:
        # READY=1 after the model loaded and the warm-up inference ran: not waiting for the camera
        ready_at = d.wait_ready()
        down = wait_for(
            lambda: next((s for s in _statuses(d.fake, ready_at) if "door down (" in s), None),
            timeout=30,
            what="a STATUS line showing the camera down",
        )
        assert "connection refused" in down and "retry in" in down, down
        assert "0/1 cameras up" in down, down
        cam = wait_for(
            lambda: next((c for c in _door_stats(subscriber) if c.get("retry_in_s") is not None), None),
            timeout=30,
            what="a stats message with the camera down and its next retry",
        )
        assert cam["state"] == "reconnecting" and "connection refused" in cam["last_error"], cam
        d.fake.wait_pings(2, timeout=4 * WATCHDOG_S, since=d.fake.messages[ready_at].time)

        server.start()  # the camera boots after the Jetson
        back = time.monotonic()
        subscriber.wait("door/detections", timeout=60, since=back)
        up_line: Optional[str] = wait_for(
            lambda: next((s for s in _statuses(d.fake, ready_at) if s.startswith("1/1 cameras up")), None),
            timeout=30,
            what="a STATUS line with the camera up",
        )
        assert d.proc.poll() is None, d.log_text()[-3000:]
        assert {m.pid for m in d.fake.messages} == {d.proc.pid}
        assert len([m for m in d.fake.messages if m.matches("READY=1")]) == 1  # never restarted
        # for the report: what the log and systemd's STATUS showed
        print("\n--- STATUS lines ---")
        for line in _statuses(d.fake):
            print("STATUS=" + line)
        print(f"(last: {up_line})\n--- daemon log ---")
        print(d.log_text())
    finally:
        d.stop()
        server.kill()
