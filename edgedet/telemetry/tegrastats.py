"""Reads power and temperature from NVIDIA's ``tegrastats`` executable (every Jetson, every JetPack).

``tegrastats --interval <ms>`` runs as a child process; its own named thread reads the lines as they
come (blocking in select() on the pipe, waking at most once a second when idle: no busy loop), parses
each with the pure parser and keeps the newest Reading. If tegrastats exits, dies or falls silent for
longer than a reading stays fresh, it is (killed and) started again after a capped exponential
backoff; ``stop()`` terminates it (then kills it if it lingers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import List, Optional

from edgedet.errors import TelemetryError
from edgedet.runtime.worker import Worker
from edgedet.telemetry.base import default_stale_after
from edgedet.telemetry.reading import Reading, reading_from_tegrastats
from edgedet.telemetry.tegrastats_parse import TegrastatsReading, parse_tegrastats

log = logging.getLogger(__name__)

# a run that lasted this long was healthy: the next failure starts the backoff from the minimum again
_HEALTHY_RUN_S = 30.0
_TERMINATE_WAIT_S = 2.0
# the reading thread wakes at least this often while waiting for output (heartbeat, hang check)
_WAKE_S = 1.0
_MAX_LINE = 64 * 1024


def find_tegrastats(path: str = "tegrastats") -> Optional[str]:
    """The executable to run: ``path`` itself when it has a slash, else looked up on PATH."""
    if os.sep in path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(path)


class TegrastatsReader(Worker):
    """A runtime Worker: each ``step`` starts tegrastats when it is due, or reads what it printed
    (waiting at most ``_WAKE_S``), so the heartbeat is beaten at least once a second."""

    name = "tegrastats"

    def __init__(
        self,
        interval_s: float = 5.0,
        path: str = "tegrastats",
        total_power_rail: Optional[str] = None,
        restart_min_s: float = 1.0,
        restart_max_s: float = 60.0,
        stale_after_s: Optional[float] = None,
    ) -> None:
        super().__init__(self.name, thread_name="telemetry-tegrastats")
        self.interval_s = float(interval_s)
        self.path = path
        self.total_power_rail = total_power_rail
        self.restart_min_s = restart_min_s
        self.restart_max_s = max(restart_max_s, restart_min_s)
        self.stale_after_s = stale_after_s if stale_after_s is not None else default_stale_after(interval_s)
        # counters for stats and tests
        self.lines = 0  # lines that gave a reading
        self.ignored_lines = 0  # lines with nothing measurable (tegrastats' own messages)
        self.starts = 0  # tegrastats processes started (1 + restarts)
        self.error: Optional[str] = None
        self._latest: Optional[Reading] = None
        self._latest_parsed: Optional[TegrastatsReading] = None
        self._lock = threading.Lock()  # guards _proc against stop() racing a (re)start
        self._proc: Optional[subprocess.Popen[bytes]] = None
        # the current run (only touched in the worker thread)
        self._backoff = restart_min_s
        self._restart_at = 0.0  # monotonic time of the next start
        self._began = 0.0
        self._last_output = 0.0
        self._pending = b""

    @property
    def command(self) -> List[str]:
        exe = find_tegrastats(self.path) or self.path
        return [exe, "--interval", str(max(1, round(self.interval_s * 1000)))]

    @property
    def pid(self) -> Optional[int]:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        if self.alive:
            return
        if find_tegrastats(self.path) is None:
            raise TelemetryError(
                f"tegrastats: '{self.path}' is not an executable file or on PATH; set "
                "telemetry.tegrastats_path, or telemetry.type to another reader (or auto/none)"
            )
        self._backoff = self.restart_min_s
        self._restart_at = 0.0
        super().start()

    def latest(self) -> Optional[Reading]:
        reading = self._latest
        if reading is None or reading.age() > self.stale_after_s:
            return None
        return reading

    def latest_parsed(self) -> Optional[TegrastatsReading]:
        """Every field of the newest line (engines, EMC, swap ...), for a detailed message."""
        return self._latest_parsed

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            super().stop()
            proc = self._proc
        if proc is not None:
            _terminate(proc)
        if not self.join(timeout):
            log.warning("tegrastats reader thread did not stop within %.1f s", timeout)

    # -- the worker thread -----------------------------------------------------------------
    def step(self) -> None:
        proc = self._proc
        if proc is None:
            wait = self._restart_at - time.monotonic()
            if wait > 0:
                self.stop_event.wait(min(wait, _WAKE_S))
                return
            try:
                self._spawn()
            except Exception as exc:  # a bug here must cost a restart, never the telemetry thread
                log.exception("tegrastats reader failed")
                self._schedule_restart(f"reader error: {type(exc).__name__}: {exc}")
            return
        try:
            outcome = self._read(proc)
        except Exception as exc:  # a bug here must cost a restart, never the telemetry thread
            log.exception("tegrastats reader failed")
            outcome = f"reader error: {type(exc).__name__}: {exc}"
        if outcome is not None:
            self._end_run(proc, outcome)

    def teardown(self) -> None:
        proc = self._proc
        if proc is not None:
            self._end_run(proc, "stopped")

    def _spawn(self) -> None:
        cmd = self.command
        with self._lock:
            if self.stop_event.is_set():
                return
            self._began = self._last_output = time.monotonic()
            self._pending = b""
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,  # its complaints arrive as lines and are logged
                    bufsize=0,
                    # its own session: a Ctrl-C meant for the daemon must not kill it behind our back
                    start_new_session=True,
                )
            except OSError as exc:
                self._schedule_restart(f"cannot run {cmd[0]}: {exc}")
                return
            self._proc = proc
            self.starts += 1
        log.debug("tegrastats started: %s (pid %d)", " ".join(cmd), proc.pid)

    def _end_run(self, proc: subprocess.Popen[bytes], outcome: str) -> None:
        """The run is over (exit, silence, stop or a reader bug): end the process, plan the next start."""
        rc = _terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        with self._lock:
            self._proc = None
        if not self.stop_event.is_set():
            self._schedule_restart(outcome or f"exited with status {rc}")

    def _schedule_restart(self, outcome: str) -> None:
        now = time.monotonic()
        if now - self._began >= _HEALTHY_RUN_S:
            self._backoff = self.restart_min_s
        self.error = outcome
        log.warning("tegrastats: %s; starting it again in %.1f s", outcome, self._backoff)
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2.0, self.restart_max_s)

    def _read(self, proc: subprocess.Popen[bytes]) -> Optional[str]:
        """Hand the lines printed within ``_WAKE_S`` to ``_handle``; None while the run goes on, else
        what ended it ("" for an exit). Blocks in select() (no busy loop) and notices a tegrastats that
        hangs silently."""
        if proc.stdout is None:
            return "no stdout"
        ready, _, _ = select.select([proc.stdout.fileno()], [], [], _WAKE_S)
        now = time.monotonic()
        if not ready:
            silent = now - self._last_output
            if silent > self.stale_after_s + self.interval_s:
                return f"printed nothing for {silent:.1f} s (hung?)"
            return None
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return ""  # EOF: it exited (or stop() ended it)
        self._last_output = now
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._handle(line.decode("utf-8", errors="replace"))
        if len(self._pending) > _MAX_LINE:  # a stream without newlines must not grow without bound
            self._pending = b""
        return None

    def _handle(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        try:
            parsed = parse_tegrastats(text)
        except Exception:  # the parser is meant never to raise; a bug there must not end telemetry
            log.exception("tegrastats: cannot parse %r", text[:200])
            return
        if parsed.empty:
            self.ignored_lines += 1
            if self.ignored_lines <= 3:
                log.warning("tegrastats said: %s", text[:200])
            return
        self._latest_parsed = parsed
        self._latest = reading_from_tegrastats(parsed, self.total_power_rail)
        self.lines += 1
        self.error = None


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    # it runs in its own session (pgid == pid): signal the group so a wrapper script's children go too
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        with contextlib.suppress(OSError):
            proc.send_signal(sig)


def _terminate(proc: subprocess.Popen[bytes]) -> Optional[int]:
    """End the process politely (SIGTERM), then firmly (SIGKILL); return its exit status."""
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(_TERMINATE_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("tegrastats (pid %d) ignored SIGTERM; killing it", proc.pid)
            _signal(proc, signal.SIGKILL)
            try:
                proc.wait(_TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                log.error("tegrastats (pid %d) survives SIGKILL", proc.pid)
    return proc.returncode
