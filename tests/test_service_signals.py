"""Signals in a real subprocess: SIGHUP asks for a reload, SIGTERM/SIGINT for a graceful stop, a second
stop signal exits at once with code 1; and in-process: handlers are restored afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, List

import pytest

from edgedet.service.signals import IMMEDIATE_EXIT_CODE, SignalEvents

REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import sys, time
from edgedet.service.logging_setup import configure_logging
from edgedet.service.signals import SignalEvents
configure_logging("info", force_journal=False)
sig = SignalEvents().install()
print("ready", flush=True)
while True:
    sig.wait(0.5)
    if sig.take_reload():
        print("reload", flush=True)
    if sig.stop_requested.is_set():
        break
print("stopping", sig.stop_reason, flush=True)
if sys.argv[1] == "slow-stop":
    time.sleep(60)  # a stop stuck flushing: only a second signal ends it early
print("stopped", flush=True)
sig.uninstall()
"""


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert _line(proc.stdout) == "ready"
    return proc


def _line(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline().strip()


def test_sighup_reloads_then_sigterm_stops_gracefully(tmp_path: Path) -> None:
    proc = _start(tmp_path, "normal")
    try:
        for _ in range(2):
            proc.send_signal(signal.SIGHUP)
            assert _line(proc.stdout) == "reload"
        proc.send_signal(signal.SIGTERM)
        assert _line(proc.stdout) == "stopping received SIGTERM"
        assert _line(proc.stdout) == "stopped"
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None and "stopping gracefully" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_sigint_stops_gracefully(tmp_path: Path) -> None:
    proc = _start(tmp_path, "normal")
    try:
        proc.send_signal(signal.SIGINT)
        assert _line(proc.stdout) == "stopping received SIGINT"
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


def test_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    proc = _start(tmp_path, "slow-stop")
    try:
        proc.send_signal(signal.SIGTERM)
        assert _line(proc.stdout) == "stopping received SIGTERM"
        proc.send_signal(signal.SIGTERM)
        # the graceful stop sleeps 60 s; the process must be gone long before that
        assert proc.wait(timeout=20) == IMMEDIATE_EXIT_CODE
        assert proc.stdout is not None and "stopped" not in proc.stdout.read()
        assert proc.stderr is not None and "second stop signal (SIGTERM)" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_in_process_events_and_restore() -> None:
    exits: List[int] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    sig = SignalEvents(exit_fn=exits.append)
    with sig:
        os.kill(os.getpid(), signal.SIGHUP)
        assert sig.reload_requested.wait(5)
        assert sig.take_reload() is True and sig.take_reload() is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert sig.stop_requested.wait(5)
        assert sig.wait(0.1) is True
        assert sig.stop_signal == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGHUP)  # ignored while stopping
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = threading.Event()
        for _ in range(100):
            if exits:
                break
            deadline.wait(0.05)
        assert exits == [IMMEDIATE_EXIT_CODE]
        assert sig.take_reload() is False
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # our wake-up fd was removed


def test_programmatic_stop_then_signal_is_graceful_then_immediate() -> None:
    exits: List[int] = []
    with SignalEvents(exit_fn=exits.append) as sig:
        sig.request_stop("inference worker failed")
        assert sig.wait(1) and sig.stop_reason == "inference worker failed"
        os.kill(os.getpid(), signal.SIGTERM)  # systemd stopping us meanwhile: still graceful
        threading.Event().wait(0.3)
        assert exits == []
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if exits:
                break
            threading.Event().wait(0.05)
        assert exits == [IMMEDIATE_EXIT_CODE]


def test_install_off_main_thread_is_refused() -> None:
    errors: List[BaseException] = []

    def target() -> None:
        try:
            SignalEvents().install()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=target, name="not-main")
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0])


pytestmark = pytest.mark.timeout(60)
