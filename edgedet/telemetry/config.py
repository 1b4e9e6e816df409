"""Telemetry reader selection and the thermal throttling policy."""

from typing import List, Optional

from pydantic import Field, model_validator
from typing_extensions import Literal

from edgedet.configbase import Strict


class ThrottleStep(Strict):
    """Above ``above_c`` on the policy's sensor, cap processing at ``max_fps``."""

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
        if temps != sorted(temps):
            raise ValueError("throttle steps must be sorted by above_c, coolest first")
        return self


class TelemetryConfig(Strict):
    # auto tries tegrastats, jtop, nvml, sysfs in that order
    type: Literal["auto", "tegrastats", "jtop", "nvml", "sysfs", "none"] = "auto"
    interval_s: float = Field(default=5.0, ge=0.1)
    tegrastats_path: str = "tegrastats"
    retain: bool = False
    # name of the power rail that measures the whole module's input (None: guess VDD_IN/POM_5V_IN/...)
    total_power_rail: Optional[str] = None
    throttle: ThrottleConfig = ThrottleConfig()
