"""The systemd watchdog, tied to real progress.

``WatchdogGate`` (pure) decides from the stages' heartbeat ages whether the daemon is healthy: a hung
inference call, a dead worker or a stale publisher make it unhealthy; a camera that is down does not
(cameras reconnect on their own and are reported in STATUS). ``WatchdogPinger`` is the thread that sends
WATCHDOG=1 at half the systemd interval, only while its ``health()`` callable says healthy, so that
systemd restarts a daemon that stopped making progress.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Collection, List, Mapping, Optional, Tuple

from edgedet.runtime.worker import Worker
from edgedet.service.notify import Notifier

log = logging.getLogger(__name__)

Health = Tuple[bool, str]
HealthCheck = Callable[[], Health]


def worker_age(worker: Worker) -> float:
    """A worker's heartbeat age in seconds; infinite once its thread failed or ended."""
    if worker.failure is not None or not worker.alive:
        return math.inf
    return worker.heartbeat_age


def _fmt_age(age: float) -> str:
    return "dead" if math.isinf(age) else f"stalled {age:.1f} s"


class WatchdogGate:
    """Healthy while every critical stage has shown progress within ``timeout_s`` seconds."""

    def __init__(self, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError("the heartbeat timeout must be positive")
        self.timeout_s = float(timeout_s)

    def stale(self, ages: Mapping[str, Optional[float]]) -> List[str]:
        """Names whose heartbeat is older than the timeout (None, NaN and inf count as stale), sorted."""
        out = []
        for name, age in ages.items():
            if age is None or math.isnan(age) or age > self.timeout_s:
                out.append(name)
        return sorted(out)

    def check(self, ages: Mapping[str, Optional[float]], optional: Collection[str] = ()) -> Health:
        """(healthy, reason) for heartbeat ages by stage name.

        Stages named in ``optional`` (the capture stages of cameras) are reported in the reason when
        stale but never make the daemon unhealthy: a camera that is down must not get the whole daemon
        restarted, while a hung inference call, a dead worker or a stale publisher must.
        """
        stale = self.stale(ages)
        critical = [n for n in stale if n not in optional]
        minor = [n for n in stale if n in optional]

        def describe(names: List[str]) -> str:
            parts = []
            for n in names:
                age = ages[n]
                parts.append(f"{n} {_fmt_age(math.inf if age is None or math.isnan(age) else age)}")
            return ", ".join(parts)

        if critical:
            reason = f"{describe(critical)} (heartbeat limit {self.timeout_s:g} s)"
            if minor:
                reason += f"; also {describe(minor)}"
            return False, reason
        if minor:
            return True, f"ok; {describe(minor)} (not critical)"
        return True, "ok"


def always_healthy(reason: str = "starting") -> HealthCheck:
    """A health check for the start-up phase, before any stage reports heartbeats."""
    return lambda: (True, reason)


class WatchdogPinger:
    """Thread ``watchdog``: WATCHDOG=1 every ``interval_s * fraction`` seconds while ``health()`` is True.

    ``interval_s`` is ``Notifier.watchdog_interval()``; nothing happens when it is None (no watchdog).
    systemd arms the watchdog when READY=1 arrives and keeps it through RELOADING=1: start this after
    READY=1, and during a reload that rebuilds stages use ``set_health(always_healthy("reloading"))``.
    Transitions are logged; on becoming unhealthy a ``STATUS=`` line with the reason is sent once, so
    ``systemctl status`` shows why systemd is about to restart the service.
    """

    def __init__(
        self,
        notifier: Notifier,
        health: Optional[HealthCheck],
        interval_s: Optional[float],
        fraction: float = 0.5,
    ) -> None:
        if not 0 < fraction < 1:
            raise ValueError("the ping fraction must be between 0 and 1")
        self.notifier = notifier
        self.interval_s = interval_s
        self.period_s = None if interval_s is None else interval_s * fraction
        self._health: HealthCheck = health or always_healthy()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.healthy = True
        self.reason = "not started"
        self.pings = 0
        self.withheld = 0

    def set_health(self, health: HealthCheck) -> None:
        self._health = health

    @property
    def enabled(self) -> bool:
        return self.period_s is not None

    def start(self) -> None:
        if self.period_s is None:
            log.debug("systemd watchdog not enabled; no pings")
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        log.info(
            "systemd watchdog: %.3g s, pinging every %.3g s while healthy", self.interval_s, self.period_s
        )
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def tick(self) -> bool:
        """One check-and-maybe-ping (the thread's body; callable directly). True when healthy (pinged)."""
        try:
            healthy, reason = self._health()
        except Exception as exc:  # a broken check must fail safe: withhold pings, let systemd act
            healthy, reason = False, f"health check raised {type(exc).__name__}: {exc}"
            log.exception("watchdog health check failed")
        if healthy != self.healthy:
            if healthy:
                log.warning("watchdog: healthy again (%s); pinging systemd", reason)
            else:
                log.error("watchdog: withholding pings, systemd will restart the service: %s", reason)
                self.notifier.status(f"unhealthy, watchdog pings withheld: {reason}")
        self.healthy, self.reason = healthy, reason
        if not healthy:
            self.withheld += 1
            return False
        if self.notifier.watchdog():
            self.pings += 1
        return True

    def _run(self) -> None:
        period = self.period_s
        if period is None:  # pragma: no cover - start() checks
            return
        while not self._stop.is_set():
            self.tick()
            if self._stop.wait(period):
                break
