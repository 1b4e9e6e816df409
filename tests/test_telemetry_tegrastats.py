"""The tegrastats reader end to end, with tests/support/fake_tegrastats (replays the real recorded
lines at the requested --interval, then exits) placed first on PATH as ``tegrastats``."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from edgedet.errors import TelemetryError
from edgedet.telemetry.config import TelemetryConfig
from edgedet.telemetry.factory import open_telemetry, probe
from edgedet.telemetry.tegrastats import TegrastatsReader
from tests.support.waiting import wait_for

FAKE = Path(__file__).resolve().parent / "support" / "fake_tegrastats"


def install(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tegrastats`` first on PATH: a wrapper running the replaying fake with this interpreter."""
    bin_dir = tmp_path / "bin"
    install(bin_dir, "tegrastats", f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def test_auto_picks_tegrastats_restarts_it_with_backoff_and_readings_keep_coming(
    fake_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = tmp_path / "starts.txt"
    monkeypatch.setenv("FAKE_TEGRASTATS_COUNT", "3")  # exits after 3 lines each run
    monkeypatch.setenv("FAKE_TEGRASTATS_STARTS", str(starts))
    monkeypatch.setenv("FAKE_TEGRASTATS_DEVICE", "Orin")  # the six Orin rows (JP5, 6, 7, Nano, NX)
    cfg = TelemetryConfig(interval_s=0.1, restart_min_s=0.2, restart_max_s=0.4)
    reader = open_telemetry(cfg, root=tmp_path)
    assert isinstance(reader, TegrastatsReader)
    assert reader.command[1:] == ["--interval", "100"]
    seen: List[Dict[str, object]] = []
    reader.start()
    try:
        # three runs of three lines: the fake exited twice and was started again each time
        def progressed() -> bool:
            r = reader.latest()
            if r is not None and (not seen or seen[-1]["time"] != r.time):
                seen.append(r.to_payload())
            return reader.starts >= 3 and reader.lines >= 7

        wait_for(progressed, 20, "three runs of tegrastats with readings from each")
        assert reader.thread is not None and reader.thread.name == "telemetry-tegrastats"
        assert reader.heartbeat_age < 5
    finally:
        reader.stop()
    assert reader.thread is None
    # the start times the fake recorded: each gap is at least 3 lines x 0.1 s + the backoff,
    # which doubles from restart_min_s and is capped at restart_max_s
    runs = [line.split() for line in starts.read_text().splitlines()]
    assert len(runs) >= 3 and len({pid for pid, _t in runs}) == len(runs)
    times = [float(t) for _pid, t in runs]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.3 + 0.2 - 0.02
    assert gaps[1] >= 0.3 + 0.4 - 0.02
    # real values from the replayed Orin lines came through, in the normalised form
    assert seen, "no reading observed"
    sources = {p["total_power_source"] for p in seen}
    assert sources <= {"sum", "VDD_IN"} and seen[0]["source"] == "tegrastats"
    assert any(p["temperatures_c"].get("tj") in (43.906, 49.156, 45.843) for p in seen)  # type: ignore[union-attr]
    json.dumps(seen)


def test_stop_kills_a_running_tegrastats(fake_on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TEGRASTATS_COUNT", "0")  # runs until killed, like the real one
    reader = TegrastatsReader(interval_s=0.1, path="tegrastats")
    reader.start()
    try:
        wait_for(lambda: reader.lines >= 2, 20, "two readings")
        pid = reader.pid
        assert pid is not None
    finally:
        reader.stop()
    assert reader.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: gone entirely, not a zombie
    assert reader.starts == 1


def test_stop_kills_a_tegrastats_that_ignores_sigterm(tmp_path: Path) -> None:
    line = "RAM 1/2MB (lfb 1x4MB) tj@40.5C VDD_IN 1000mW/1000mW"
    exe = install(
        tmp_path / "bin",
        "stubborn",
        f"#!/bin/sh\ntrap '' TERM\nwhile :; do echo '{line}'; sleep 0.1; done\n",
    )
    reader = TegrastatsReader(interval_s=0.1, path=str(exe))
    reader.start()
    try:
        wait_for(lambda: reader.lines >= 1, 20, "a reading")
        pid = reader.pid
        assert pid is not None
        reading = reader.latest()
        assert reading is not None and reading.temperature("tj") == 40.5 and reading.total_power_mw == 1000
    finally:
        reader.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_failing_tegrastats_is_retried_and_gives_no_reading(tmp_path: Path) -> None:
    exe = install(tmp_path / "bin", "broken", "#!/bin/sh\necho 'Error: cannot open /dev/nvhost'\nexit 3\n")
    reader = TegrastatsReader(interval_s=0.1, path=str(exe), restart_min_s=0.05, restart_max_s=0.1)
    reader.start()
    try:
        wait_for(lambda: reader.starts >= 3, 20, "two restarts")
        assert reader.latest() is None and reader.lines == 0
        assert reader.ignored_lines >= 2  # its message was read and not taken for a reading
        assert reader.error is not None and "status 3" in reader.error
    finally:
        reader.stop()


def test_a_silent_tegrastats_is_killed_and_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One line, then it hangs without exiting: once its reading is stale it is replaced."""
    line = "RAM 1/2MB (lfb 1x4MB) tj@40.5C"
    exe = install(tmp_path / "bin", "hangs", f"#!/bin/sh\necho '{line}'\nexec sleep 600\n")
    reader = TegrastatsReader(
        interval_s=0.1, path=str(exe), restart_min_s=0.05, restart_max_s=0.05, stale_after_s=0.3
    )
    reader.start()
    try:
        with caplog.at_level(logging.WARNING, logger="edgedet.telemetry.tegrastats"):
            wait_for(lambda: reader.starts >= 2 and reader.lines >= 2, 20, "a restart and readings after it")
        assert any("printed nothing" in r.getMessage() for r in caplog.records)
    finally:
        reader.stop()
    assert reader.pid is None


def test_missing_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    cfg = TelemetryConfig(type="tegrastats")
    with pytest.raises(TelemetryError, match="tegrastats"):
        open_telemetry(cfg)
    with pytest.raises(TelemetryError, match="not an executable"):
        TegrastatsReader(path=str(tmp_path / "nope" / "tegrastats")).start()
    result = probe("tegrastats", TelemetryConfig(), tmp_path)
    assert not result.available and "tegrastats" in str(result.reason)


def test_stale_reading_is_not_served(fake_on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TEGRASTATS_COUNT", "1")
    reader = TegrastatsReader(interval_s=0.1, restart_min_s=5.0, restart_max_s=5.0, stale_after_s=0.5)
    reader.start()
    try:
        wait_for(lambda: reader.lines >= 1, 20, "a reading")
        assert reader.latest_parsed() is not None
        # the fake exited after one line and the restart is 5 s away: the reading goes stale
        wait_for(lambda: reader.latest() is None, 5, "the reading to go stale")
    finally:
        reader.stop()
