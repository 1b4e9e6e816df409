"""sd_notify over a real AF_UNIX datagram socket (file path and abstract namespace), both transports."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from edgedet.service.notify import Notifier, watchdog_interval
from tests.support.fake_systemd import FakeSystemd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["path", "abstract"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    with FakeSystemd(tmp_path, abstract=request.param == "abstract") as f:
        yield f


def test_protocol_messages_arrive_in_order(fake: FakeSystemd) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": fake.address}, use_libsystemd=False)
    assert n.via == "socket" and n.enabled
    assert n.status("starting:\nREADY=1 must not become an assignment")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    assert n.ready("2/2 cameras up")
    assert n.watchdog()
    assert n.stopping()
    status, reloading, ready, ping, stop = fake.assert_sequence(
        ["STATUS=", "RELOADING=1", "READY=1", "WATCHDOG=1", "STOPPING=1"], timeout=5
    )
    # the newline was folded: one STATUS field, no READY=1 smuggled in before the real one
    assert status.fields == {"STATUS": "starting: READY=1 must not become an assignment"}
    assert "READY" not in status.fields
    usec = int(reloading.fields["MONOTONIC_USEC"])
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert ready.fields["STATUS"] == "2/2 cameras up"
    assert {m.pid for m in (status, ready, ping, stop)} == {os.getpid()}
    assert n.sent == 5 and n.failed == 0


def test_libsystemd_transport(fake: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(
        "systemd.daemon", reason="systemd-python is not installed (pip install systemd-python)"
    )
    monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
    n = Notifier()
    assert n.via == "systemd-python"
    assert n.ready() and n.watchdog() and n.status("up")
    fake.assert_sequence(["READY=1", "WATCHDOG=1", "STATUS=up"], timeout=5)


def test_no_socket_is_a_no_op() -> None:
    n = Notifier(environ={})
    assert not n.enabled and n.via == "none"
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert n.watchdog_interval() is None


def test_send_errors_never_raise_and_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, use_libsystemd=False)
    with caplog.at_level(logging.DEBUG, logger="edgedet.service.notify"):
        results = [n.ready(), n.watchdog(), n.status("x")]
    assert results == [False, False, False]
    assert n.failed == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gone.sock" in warnings[0].getMessage()
    n.close()


def test_unsupported_address_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"}, use_libsystemd=False)
    with caplog.at_level(logging.WARNING, logger="edgedet.service.notify"):
        assert n.ready() is False
    assert "vsock" in caplog.text


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"WATCHDOG_USEC": "2000000"}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
    ],
)
def test_watchdog_interval(env: dict, expected: object) -> None:
    assert watchdog_interval(env, pid=4242) == expected


_CHILD = (
    "from edgedet.service.notify import Notifier\n"
    "n = Notifier()\n"
    "print(n.watchdog_interval(), n.via, flush=True)\n"
    "n.ready('child up')\n"
)


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_child_started_like_systemd_sees_its_watchdog(fake: FakeSystemd) -> None:
    proc = fake.spawn(
        [sys.executable, "-c", _CHILD],
        watchdog_usec=3_000_000,
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.split()[0] == "3.0"
    ready = fake.wait_for_notification("READY=1", timeout=5)
    # NotifyAccess=main: the datagram came from the very pid systemd would have recorded
    assert ready.pid == proc.pid
    assert ready.fields["STATUS"] == "child up"


def test_watchdog_meant_for_another_process_is_ignored(fake: FakeSystemd) -> None:
    proc = fake.spawn(
        [sys.executable, "-c", _CHILD],
        watchdog_usec=3_000_000,
        watchdog_pid=os.getpid(),  # as inherited from a parent that systemd supervises
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.split()[0] == "None"
