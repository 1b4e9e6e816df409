"""The interface every telemetry reader honours, and a base for the ones that poll on a timer.

A reader runs in its own named thread and keeps only its latest Reading; the app polls ``latest()``
whenever it publishes or applies the throttle policy. ``latest()`` returns None once the last reading
is stale (older than ``stale_after_s``), so a dead source never keeps an old temperature in force.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from typing_extensions import Protocol, runtime_checkable

from edgedet.runtime.worker import Worker
from edgedet.telemetry.reading import Reading

log = logging.getLogger(__name__)

# a reader thread wakes at least this often (heartbeat; stop() is noticed at once anyway)
_WAKE_S = 1.0


@runtime_checkable
class TelemetryReader(Protocol):
    name: str

    def start(self) -> None:
        """Start reading in the background; raises TelemetryError/DependencyError if it cannot."""

    def latest(self) -> Optional[Reading]:
        """The newest reading, or None when there is none yet or it is stale."""

    def stop(self) -> None:
        """Stop the thread and release everything (processes, library handles); idempotent."""


def default_stale_after(interval_s: float) -> float:
    """A reading older than three intervals (at least interval + 5 s) is no longer current."""
    return max(3.0 * interval_s, interval_s + 5.0)


class PolledReader(Worker):
    """Calls ``sample()`` every ``interval_s`` seconds in a runtime Worker thread named ``telemetry-<name>``.

    Subclasses implement ``open`` (runs in ``start``, in the caller's thread, so a missing library or
    an unreachable service is an exception the app sees), ``sample`` and ``close``. A failing sample
    is logged once (then at debug until it recovers) and retried next interval: telemetry is never
    worth stopping the daemon for. The heartbeat is beaten at least once a second, between samples too.
    """

    name = "polled"

    def __init__(self, interval_s: float, stale_after_s: Optional[float] = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        super().__init__(self.name, thread_name=f"telemetry-{self.name}")
        self.interval_s = float(interval_s)
        self.stale_after_s = stale_after_s if stale_after_s is not None else default_stale_after(interval_s)
        self.error: Optional[str] = None  # last sampling problem, None while healthy
        self.samples = 0
        self._latest: Optional[Reading] = None
        self._next_sample = 0.0

    # -- to implement ----------------------------------------------------------------------
    def open(self) -> None:
        """Acquire the source; raise TelemetryError (or DependencyError) when it is unavailable."""

    def sample(self) -> Reading:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source; called once after the thread has ended."""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.alive:
            return
        self.open()
        self._next_sample = 0.0
        super().start()

    def latest(self) -> Optional[Reading]:
        reading = self._latest
        if reading is None or reading.age() > self.stale_after_s:
            return None
        return reading

    def stop(self, timeout: float = 5.0) -> None:
        super().stop()
        if not self.join(timeout):
            log.warning("telemetry reader %s did not stop within %.1f s", self.name, timeout)
        try:
            self.close()
        except Exception:
            log.exception("telemetry reader %s: close failed", self.name)

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + self.interval_s
            self._sample_once()
        # wake at least once a second so the heartbeat stays fresh with long intervals
        self.stop_event.wait(max(0.0, min(_WAKE_S, self._next_sample - time.monotonic())))

    def _sample_once(self) -> None:
        try:
            reading = self.sample()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self.error is None:
                log.warning(
                    "telemetry %s: reading failed (%s); retrying every %.1f s",
                    self.name,
                    message,
                    self.interval_s,
                )
            else:
                log.debug("telemetry %s: reading failed again: %s", self.name, message)
            self.error = message
        else:
            if self.error is not None:
                log.info("telemetry %s: readings are back", self.name)
            self.error = None
            self._latest = reading
            self.samples += 1
