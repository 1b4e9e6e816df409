"""Telemetry reader selection and the thermal throttling policy."""

from typing import List, Optional

from pydantic import Field, model_validator
from typing_extensions import Literal

from edgedet.configbase import Strict


class ThrottleStep(Strict):
    """At or above ``above_c`` on the policy's sensor, cap processing at ``max_fps``."""

    above_c: float
    max_fps: float = Field(gt=0)


class ThrottleConfig(Strict):
    enabled: bool = False
    sensor: str = "tj"  # temperature name as reported (case-insensitive): tj, gpu, cpu, soc0 ...
    steps: List[ThrottleStep] = []
    # a step is left only once the temperature is this far below its threshold
    hysteresis_c: float = Field(default=3.0, ge=0)

    @model_validator(mode="after")
    def _steps_sorted(self) -> "ThrottleConfig":
        temps = [s.above_c for s in self.steps]
        if any(b <= a for a, b in zip(temps, temps[1:])):
            raise ValueError("throttle steps must be sorted by above_c, coolest first, without repeats")
        fps = [s.max_fps for s in self.steps]
        if any(b > a for a, b in zip(fps, fps[1:])):
            raise ValueError("throttle steps: max_fps must not rise as the temperature rises")
        if self.enabled and not self.steps:
            raise ValueError("throttle is enabled but has no steps")
        return self


class TelemetryConfig(Strict):
    # auto tries tegrastats, jtop, nvml, sysfs in that order
    type: Literal["auto", "tegrastats", "jtop", "nvml", "sysfs", "none"] = "auto"
    interval_s: float = Field(default=5.0, ge=0.1)
    tegrastats_path: str = "tegrastats"
    # tegrastats is started again after it exits, waiting min..max seconds (doubling each time)
    restart_min_s: float = Field(default=1.0, gt=0)
    restart_max_s: float = Field(default=60.0, gt=0)
    # name of the power rail that measures the whole module's input (None: VDD_IN or POM_5V_IN, else
    # the sum of the module's rails on boards without an input rail: AGX Xavier, AGX Orin, Thor)
    total_power_rail: Optional[str] = None
    throttle: ThrottleConfig = ThrottleConfig()

    @model_validator(mode="after")
    def _backoff_order(self) -> "TelemetryConfig":
        if self.restart_max_s < self.restart_min_s:
            raise ValueError("restart_max_s must not be below restart_min_s")
        return self
