"""The real daemon (`python -m edgedet run --config FILE`) under a fake systemd: a real notify socket with
WATCHDOG_USEC, a real mosquitto, the real model on the bundled clip.

* READY=1 (after the first inference), STATUS=, WATCHDOG=1 pings from the main pid; SIGTERM gives
  STOPPING=1, a retained ``offline`` status on MQTT and exit 0;
* SIGHUP with an invalid edit keeps the old config running and reports the error; with a valid edit
  (a camera added) RELOADING=1 ... READY=1 and the new camera publishes;
* a backend that hangs stops the watchdog pings within one interval.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import List

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon_harness import WATCHDOG_S, RunningDaemon, Subscriber, daemon_config
from tests.support.fake_systemd import FakeSystemd

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
