"""The normalised telemetry reading every reader (tegrastats, jtop, NVML, sysfs) produces.

It carries what the daemon acts on and publishes: temperatures, power rails, total input power, GPU
and CPU load, RAM. A missing value is None, never -1, -256 or "N/A".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from edgedet.telemetry.tegrastats_parse import TegrastatsReading

# Rails that measure a Jetson module's whole input, in the order they are looked for. Modules without
# one (AGX Xavier, AGX Orin, Thor: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 ...) get the sum of their
# rails instead, as jetson-stats does; VIN_SYS_5V0 alone is only one of those rails (3.8 W of 10.1 W
# on the recorded AGX Orin line), so it is never taken as the total.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# Rails that are not connected (AGX Orin prints "NC 0mW/0mW") never count towards a sum.
# ("NC_2" is the parser's name for the second one)
_UNCONNECTED = re.compile(r"NC(?:_\d+)?", re.IGNORECASE)

RailValues = Tuple[Optional[float], Optional[float]]  # (current mW, average mW)


@dataclass(frozen=True)
class Reading:
    """One sample of power and temperature from one source.

    ``total_power_source`` says where ``total_power_mw`` came from: a rail name (``VDD_IN``, or the
    configured ``telemetry.total_power_rail``), ``"sum"`` (sum of all connected rails: a module
    without an input rail), ``"jtop"``/``"nvml"`` (the library's own total), or None (unknown).
    """

    source: str
    time: float  # wall clock, time.time()
    monotonic: float  # time.monotonic() at the same instant, for staleness checks
    temperatures: Mapping[str, Optional[float]] = field(default_factory=dict)  # name -> C (None: offline)
    power_rails: Mapping[str, RailValues] = field(default_factory=dict)
    total_power_mw: Optional[float] = None
    total_power_source: Optional[str] = None
    gpu_load_pct: Optional[float] = None
    gpu_mhz: Optional[float] = None
    cpu_loads_pct: Tuple[Optional[float], ...] = ()  # per core; None: core offline
    ram_used_mb: Optional[float] = None
    ram_total_mb: Optional[float] = None

    def temperature(self, name: str) -> Optional[float]:
        """The named sensor in C, matched leniently (see ``find_temperature``); None when absent/offline."""
        return find_temperature(self.temperatures, name)

    def max_temperature(self) -> Tuple[Optional[str], Optional[float]]:
        """The hottest online sensor, skipping PMIC (a fixed 50C/100C placeholder on Nano/TX2/Xavier)."""
        best: Tuple[Optional[str], Optional[float]] = (None, None)
        for name, value in self.temperatures.items():
            if value is None or "pmic" in name.lower():
                continue
            if best[1] is None or value > best[1]:
                best = (name, value)
        return best

    def age(self, now: Optional[float] = None) -> float:
        return (time.monotonic() if now is None else now) - self.monotonic

    def to_payload(self) -> Dict[str, Any]:
        """A JSON-able dict for the telemetry message's ``readings`` (publish defines the envelope)."""
        hottest, hottest_c = self.max_temperature()
        return {
            "source": self.source,
            "time": round(self.time, 3),
            "temperatures_c": {k: _round(v, 3) for k, v in self.temperatures.items()},
            "temp_max_c": _round(hottest_c, 3),
            "temp_max_sensor": hottest,
            "power_mw": {
                k: {"current": _round(cur, 1), "average": _round(avg, 1)}
                for k, (cur, avg) in self.power_rails.items()
            },
            "total_power_mw": _round(self.total_power_mw, 1),
            "total_power_source": self.total_power_source,
            "gpu_load_pct": _round(self.gpu_load_pct, 1),
            "gpu_mhz": _round(self.gpu_mhz, 1),
            "cpu_load_pct": [_round(v, 1) for v in self.cpu_loads_pct],
            "ram_used_mb": _round(self.ram_used_mb, 1),
            "ram_total_mb": _round(self.ram_total_mb, 1),
        }


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _norm(name: str) -> str:
    n = name.lower()
    for suffix in ("-thermal", "_thermal", "-therm", "_therm"):
        if n.endswith(suffix):
            return n[: -len(suffix)]
    return n


def find_temperature(temperatures: Mapping[str, Optional[float]], name: str) -> Optional[float]:
    """Look a sensor up by name: exact, then case-insensitive, then ignoring a ``-thermal`` suffix.

    tegrastats says ``tj``/``CPU``, sysfs thermal zones say ``tj-thermal``/``CPU-therm``: one config
    name (``telemetry.throttle.sensor: tj``) works with every reader.
    """
    if name in temperatures:
        return temperatures[name]
    wanted = _norm(name)
    for key, value in temperatures.items():
        if _norm(key) == wanted:
            return value
    return None


def _find_rail(rails: Mapping[str, RailValues], name: str) -> Optional[str]:
    if name in rails:
        return name
    low = name.lower()
    for key in rails:
        if key.lower() == low:
            return key
    return None


def select_total_power(
    rails: Mapping[str, RailValues], configured: Optional[str] = None, allow_sum: bool = True
) -> Tuple[Optional[float], Optional[str]]:
    """(total input power mW, where it came from) following the rules in ``Reading``'s docstring.

    A configured rail that is absent gives (None, None): guessing would hide a misconfiguration.
    ``allow_sum`` is for Jetson rail sets only; summing a PC's unrelated hwmon sensors means nothing.
    """
    if configured:
        key = _find_rail(rails, configured)
        return (rails[key][0], key) if key is not None else (None, None)
    for name in INPUT_RAILS:
        key = _find_rail(rails, name)
        if key is not None:
            return rails[key][0], key
    if allow_sum:
        values = [cur for name, (cur, _avg) in rails.items() if cur is not None and not _unconnected(name)]
        if values:
            return float(sum(values)), "sum"
    return None, None


def _unconnected(name: str) -> bool:
    return _UNCONNECTED.fullmatch(name) is not None


def reading_from_tegrastats(
    parsed: TegrastatsReading,
    total_power_rail: Optional[str] = None,
    now: Optional[float] = None,
    now_monotonic: Optional[float] = None,
) -> Reading:
    rails: Dict[str, RailValues] = {
        name: (rail.current_mw, rail.average_mw) for name, rail in parsed.rails.items()
    }
    total, total_source = select_total_power(rails, total_power_rail)
    gpu = parsed.gpu
    return Reading(
        source="tegrastats",
        time=time.time() if now is None else now,
        monotonic=time.monotonic() if now_monotonic is None else now_monotonic,
        temperatures=dict(parsed.temperatures),
        power_rails=rails,
        total_power_mw=total,
        total_power_source=total_source,
        gpu_load_pct=gpu.load_pct if gpu is not None else None,
        gpu_mhz=gpu.mhz if gpu is not None else None,
        cpu_loads_pct=tuple(c.load_pct if c.online else None for c in parsed.cpus),
        ram_used_mb=parsed.ram.used_mb if parsed.ram is not None else None,
        ram_total_mb=parsed.ram.total_mb if parsed.ram is not None else None,
    )
