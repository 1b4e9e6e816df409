"""Thermal policy: step the target frame rate down as a sensor heats up, and back up with hysteresis.

Pure (no threads, no clocks): feed it each Reading, apply ``decision.max_fps`` to every camera
(``CaptureWorker.set_max_fps``; None = uncapped) and publish/log when ``decision.changed``.

Steps are sorted coolest first. A step is entered when the temperature reaches its ``above_c`` and is
left only when the temperature falls below ``above_c - hysteresis_c``, so a sensor hovering around a
threshold does not make the frame rate flap. A missing sensor (no reading, sensor absent or offline)
means no throttling, with one warning until the sensor comes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

from edgedet.telemetry.config import ThrottleConfig
from edgedet.telemetry.reading import Reading

log = logging.getLogger(__name__)

STATE_DISABLED = "disabled"
STATE_NORMAL = "normal"
STATE_NO_SENSOR = "no-sensor"


def step_state(index: int) -> str:
    """State name of step ``index`` (0-based, coolest first): step1, step2 ..."""
    return f"step{index + 1}"


@dataclass(frozen=True)
class ThrottleDecision:
    max_fps: Optional[float]  # None: no cap
    state: str  # disabled | normal | no-sensor | step1 | step2 ...
    reason: str  # e.g. "tj 87.5C >= 85C"
    temperature_c: Optional[float] = None
    changed: bool = False  # the state differs from the previous decision

    def to_payload(self) -> Dict[str, Any]:
        return {
            "state": self.state,
            "max_fps": self.max_fps,
            "reason": self.reason,
            "temperature_c": None if self.temperature_c is None else round(self.temperature_c, 3),
        }


def _c(value: float) -> str:
    return f"{value:g}C"


class ThrottlePolicy:
    def __init__(self, cfg: ThrottleConfig) -> None:
        self.cfg = cfg
        self.level = -1  # index into cfg.steps; -1 = not throttled
        self._state: Optional[str] = None
        self._warned_missing = False
        self.last: Optional[ThrottleDecision] = None  # the latest decision, for status payloads

    @property
    def state(self) -> str:
        return self._state or (STATE_NORMAL if self.cfg.enabled else STATE_DISABLED)

    def state_payload(self) -> Dict[str, Any]:
        """The latest decision as JSON-able dict (for the telemetry/stats messages)."""
        if self.last is not None:
            return self.last.to_payload()
        return {"state": self.state, "max_fps": None, "reason": "no reading yet", "temperature_c": None}

    def update(self, reading: Optional[Reading]) -> ThrottleDecision:
        cfg = self.cfg
        if not cfg.enabled or not cfg.steps:
            return self._decide(None, STATE_DISABLED, "throttling is disabled", None)
        sensor = cfg.sensor
        temp = reading.temperature(sensor) if reading is not None else None
        if temp is None:
            why = "no telemetry reading" if reading is None else f"sensor '{sensor}' is missing or offline"
            if not self._warned_missing:
                names = ", ".join(reading.temperatures) if reading is not None else "-"
                log.warning("throttle: %s; not throttling (sensors: %s)", why, names)
                self._warned_missing = True
            self.level = -1
            return self._decide(None, STATE_NO_SENSOR, why, None)
        if self._warned_missing:
            log.info("throttle: sensor '%s' is back (%.1fC)", sensor, temp)
            self._warned_missing = False

        steps = cfg.steps
        level = self.level
        while level + 1 < len(steps) and temp >= steps[level + 1].above_c:
            level += 1
        while level >= 0 and temp < steps[level].above_c - cfg.hysteresis_c:
            level -= 1
        self.level = level

        if level < 0:
            reason = f"{sensor} {temp:.1f}C < {_c(steps[0].above_c)}"
            return self._decide(None, STATE_NORMAL, reason, temp)
        step = steps[level]
        if temp >= step.above_c:
            reason = f"{sensor} {temp:.1f}C >= {_c(step.above_c)}"
        else:  # held by hysteresis
            reason = (
                f"{sensor} {temp:.1f}C >= {_c(step.above_c - cfg.hysteresis_c)} "
                f"({_c(step.above_c)} - {_c(cfg.hysteresis_c)} hysteresis)"
            )
        return self._decide(step.max_fps, step_state(level), reason, temp)

    def _decide(
        self, max_fps: Optional[float], state: str, reason: str, temp: Optional[float]
    ) -> ThrottleDecision:
        changed = state != self._state
        if changed:
            cap = "uncapped" if max_fps is None else f"max {max_fps:g} fps"
            log.log(
                logging.WARNING if state.startswith("step") else logging.INFO,
                "throttle: %s -> %s (%s): %s",
                self._state or "start",
                state,
                cap,
                reason,
            )
        self._state = state
        self.last = ThrottleDecision(
            max_fps=max_fps, state=state, reason=reason, temperature_c=temp, changed=changed
        )
        return self.last
