"""The watchdog gate (pure) and the pinger thread against real worker threads and a real notify socket."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from edgedet.runtime.worker import Worker
from edgedet.service.notify import Notifier
from edgedet.service.watchdog import WatchdogGate, WatchdogPinger, always_healthy, worker_age
from tests.support.fake_systemd import FakeSystemd
from tests.support.waiting import wait_for


def test_gate_fresh_is_healthy() -> None:
    assert WatchdogGate(15).check({"inference": 0.2, "publisher": 1.0}) == (True, "ok")


def test_gate_stale_critical_stage_is_unhealthy() -> None:
    healthy, reason = WatchdogGate(15).check({"inference": 17.25, "publisher": 1.0})
    assert not healthy
    assert "inference stalled 17.2 s" in reason and "publisher" not in reason


def test_gate_dead_worker_is_unhealthy() -> None:
    healthy, reason = WatchdogGate(15).check({"inference": 0.1, "publisher": math.inf})
    assert not healthy and "publisher dead" in reason


def test_gate_missing_reading_counts_as_stale() -> None:
    assert WatchdogGate(15).check({"inference": None})[0] is False
    assert WatchdogGate(15).check({"inference": float("nan")})[0] is False


def test_gate_camera_down_does_not_stop_pings() -> None:
    gate = WatchdogGate(15)
    healthy, reason = gate.check({"capture:front": math.inf, "inference": 0.5}, optional={"capture:front"})
    assert healthy and "capture:front dead" in reason and "not critical" in reason
    healthy, reason = gate.check({"capture:front": 99.0, "inference": 30.0}, optional={"capture:front"})
    assert not healthy and reason.startswith("inference") and "also capture:front" in reason


def test_gate_rejects_bad_timeout() -> None:
    with pytest.raises(ValueError):
        WatchdogGate(0)


class Stage(Worker):
    """A worker whose step can be made to hang (a stuck inference call) or to raise (a dead worker)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hang = threading.Event()
        self.release = threading.Event()
        self.crash = threading.Event()

    def step(self) -> None:
        if self.crash.is_set():
            raise RuntimeError("worker died")
        if self.hang.is_set():
            self.release.wait(30)
            self.hang.clear()
            self.release.clear()
        time.sleep(0.02)


@pytest.fixture
def stages() -> Iterator[Dict[str, Stage]]:
    made = {name: Stage(name) for name in ("capture:front", "inference", "publisher")}
    for s in made.values():
        s.start()
    yield made
    for s in made.values():
        s.release.set()
        s.stop()
    for s in made.values():
        s.join(5)


INTERVAL = 2.0  # WATCHDOG_USEC in seconds: pings every 1 s
HEARTBEAT = 0.6


def _pinger(fake: FakeSystemd, stages: Dict[str, Stage]) -> WatchdogPinger:
    gate = WatchdogGate(HEARTBEAT)
    notifier = Notifier(environ={"NOTIFY_SOCKET": fake.address}, use_libsystemd=False)

    def health() -> tuple[bool, str]:
        return gate.check({n: worker_age(w) for n, w in stages.items()}, optional={"capture:front"})

    return WatchdogPinger(notifier, health, INTERVAL)


@pytest.mark.slow
def test_hung_inference_stops_pings_within_one_interval_and_fresh_resumes(
    tmp_path: Path, stages: Dict[str, Stage]
) -> None:
    with FakeSystemd(tmp_path) as fake:
        pinger = _pinger(fake, stages)
        pinger.start()
        try:
            fake.wait_pings(2, timeout=10)
            hung_at = time.monotonic()
            stages["inference"].hang.set()
            status = fake.wait_for_notification("STATUS=", timeout=10)
            assert "inference stalled" in status.fields["STATUS"]
            # more than an interval of silence: systemd would have restarted us by now
            time.sleep(INTERVAL + 0.5)
            pings = fake.pings()
            last = max(pings)
            assert last - hung_at < INTERVAL, f"last ping {last - hung_at:.2f} s after the hang"
            assert not fake.pings(since=status.time)
            assert pinger.withheld >= 2 and not pinger.healthy

            stages["inference"].release.set()
            resumed = fake.wait_pings(1, timeout=10, since=time.monotonic())
            assert resumed and pinger.healthy
        finally:
            pinger.stop()
            assert pinger.join(5)


@pytest.mark.slow
def test_camera_down_keeps_pinging_dead_worker_stops(tmp_path: Path, stages: Dict[str, Stage]) -> None:
    with FakeSystemd(tmp_path) as fake:
        pinger = _pinger(fake, stages)
        pinger.start()
        try:
            fake.wait_pings(1, timeout=10)
            stages["capture:front"].hang.set()  # a camera stuck in read(): reported, not fatal
            t0 = time.monotonic()
            fake.wait_pings(3, timeout=10, since=t0 + HEARTBEAT)
            assert pinger.healthy and "capture:front" in pinger.reason

            stages["publisher"].crash.set()
            wait_for(lambda: stages["publisher"].failure is not None, 5, "the publisher stage to fail")
            died = time.monotonic()
            fake.wait_for_notification("STATUS=", timeout=10)
            time.sleep(INTERVAL)
            assert not fake.pings(since=died + INTERVAL / 2 + 0.2)
            assert "publisher dead" in pinger.reason
        finally:
            pinger.stop()
            assert pinger.join(5)


def test_pinger_without_watchdog_does_nothing(tmp_path: Path) -> None:
    with FakeSystemd(tmp_path) as fake:
        notifier = Notifier(environ={"NOTIFY_SOCKET": fake.address}, use_libsystemd=False)
        pinger = WatchdogPinger(notifier, None, None)
        pinger.start()
        assert not pinger.enabled and pinger.join(0.1)
        time.sleep(0.2)
        assert fake.messages == []


def test_tick_fails_safe_when_health_check_raises(tmp_path: Path) -> None:
    with FakeSystemd(tmp_path) as fake:
        notifier = Notifier(environ={"NOTIFY_SOCKET": fake.address}, use_libsystemd=False)

        def broken() -> tuple[bool, str]:
            raise KeyError("stage table changed")

        pinger = WatchdogPinger(notifier, broken, 10.0)
        assert pinger.tick() is False
        assert "KeyError" in pinger.reason
        pinger.set_health(always_healthy("starting"))
        assert pinger.tick() is True
        msgs: List[str] = [m.raw for m in fake.assert_sequence(["STATUS=", "WATCHDOG=1"], timeout=5)]
        assert "health check raised KeyError" in msgs[0]
