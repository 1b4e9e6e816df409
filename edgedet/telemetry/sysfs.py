"""Temperatures and power from Linux sysfs, on any machine: thermal zones and hwmon sensors.

  <root>/sys/class/thermal/thermal_zone*/{type,temp}            temp in millidegrees C
  <root>/sys/class/hwmon/hwmon*/name
      temp<N>_input (m°C) [temp<N>_label]                        -> temperature "<name>/<label>"
      power<N>_input (µW) [power<N>_label]                       -> power rail
      in<N>_input (mV) + curr<N>_input (mA) [in<N>_label]        -> power rail V*I (Jetson INA3221 on
                                                                   JetPack 5+: in1_label = VDD_IN ...)

``root`` is a constructor argument so tests lay out a temporary tree. The files are found once
(``discover``) and read every interval; a sensor that cannot be read this time reads None.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from edgedet.telemetry.base import PolledReader
from edgedet.telemetry.naming import unique_name
from edgedet.telemetry.reading import RailValues, Reading, select_total_power

log = logging.getLogger(__name__)

_TEMP_INPUT = re.compile(r"temp(\d+)_input$")
_POWER_INPUT = re.compile(r"power(\d+)_input$")
_CURR_INPUT = re.compile(r"curr(\d+)_input$")
# INA3221 channels that measure nothing (AGX Orin "NC") and its "sum of shunt voltages" channel
_SKIP_LABEL = re.compile(r"^(NC|sum of shunt voltages)$", re.IGNORECASE)
# thermal zones report this (or -256000) while the sensor is offline
_OFFLINE_MILLI = -255_000


@dataclass(frozen=True)
class RailFiles:
    power: Optional[Path] = None  # µW
    volt: Optional[Path] = None  # mV
    curr: Optional[Path] = None  # mA


@dataclass
class SysfsSensors:
    """What ``discover`` found: temperature files (millidegrees) and rail files, by display name."""

    temperatures: Dict[str, Path] = field(default_factory=dict)
    rails: Dict[str, RailFiles] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.temperatures) + len(self.rails)


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:  # offline sensors fail with EINVAL/ENODATA/EAGAIN; a vanished one with ENOENT
        return None


def _read_number(path: Optional[Path]) -> Optional[float]:
    if path is None:
        return None
    text = _read_text(path)
    if not text:
        return None
    try:
        return float(text.split()[0])
    except ValueError:
        return None


def _numbered(path: Path) -> Tuple[str, int]:
    """Sort thermal_zone10 after thermal_zone9."""
    m = re.search(r"(\d+)$", path.name)
    return (path.name.rstrip("0123456789"), int(m.group(1)) if m else -1)


def discover(root: Path = Path("/")) -> SysfsSensors:
    found = SysfsSensors()
    thermal = root / "sys" / "class" / "thermal"
    for zone in sorted(thermal.glob("thermal_zone*"), key=_numbered):
        temp = zone / "temp"
        if not temp.exists():
            continue
        name = _read_text(zone / "type") or zone.name
        found.temperatures[unique_name(name, found.temperatures)] = temp
    for hwmon in sorted((root / "sys" / "class" / "hwmon").glob("hwmon*"), key=_numbered):
        _discover_hwmon(hwmon, found)
    return found


def _discover_hwmon(hwmon: Path, found: SysfsSensors) -> None:
    chip = _read_text(hwmon / "name") or hwmon.name
    try:
        files = sorted(p.name for p in hwmon.iterdir())
    except OSError:
        return
    names = set(files)
    for fname in files:
        m = _TEMP_INPUT.match(fname)
        if m:
            label = _read_text(hwmon / f"temp{m.group(1)}_label") or f"temp{m.group(1)}"
            key = unique_name(f"{chip}/{label}", found.temperatures)
            found.temperatures[key] = hwmon / fname
            continue
        m = _POWER_INPUT.match(fname)
        if m:
            label = _read_text(hwmon / f"power{m.group(1)}_label") or f"{chip}/power{m.group(1)}"
            if not _SKIP_LABEL.match(label):
                found.rails[unique_name(label, found.rails)] = RailFiles(power=hwmon / fname)
            continue
        m = _CURR_INPUT.match(fname)
        if m and f"in{m.group(1)}_input" in names:
            n = m.group(1)
            label = (
                _read_text(hwmon / f"in{n}_label") or _read_text(hwmon / f"curr{n}_label") or f"{chip}/in{n}"
            )
            if not _SKIP_LABEL.match(label):
                found.rails[unique_name(label, found.rails)] = RailFiles(
                    volt=hwmon / f"in{n}_input", curr=hwmon / fname
                )


def read_temperatures(sensors: SysfsSensors) -> Dict[str, Optional[float]]:
    out: Dict[str, Optional[float]] = {}
    for name, path in sensors.temperatures.items():
        milli = _read_number(path)
        out[name] = None if milli is None or milli <= _OFFLINE_MILLI else milli / 1000.0
    return out


def read_rail_mw(files: RailFiles) -> Optional[float]:
    if files.power is not None:
        micro = _read_number(files.power)
        return None if micro is None else micro / 1000.0
    volt, curr = _read_number(files.volt), _read_number(files.curr)
    if volt is None or curr is None:
        return None
    return volt * curr / 1000.0  # mV * mA = µW


class SysfsReader(PolledReader):
    name = "sysfs"

    def __init__(
        self,
        interval_s: float = 5.0,
        root: Path = Path("/"),
        total_power_rail: Optional[str] = None,
        stale_after_s: Optional[float] = None,
    ) -> None:
        super().__init__(interval_s, stale_after_s)
        self.root = Path(root)
        self.total_power_rail = total_power_rail
        self.sensors = SysfsSensors()
        # running mean per rail since start: sysfs only has instantaneous values, tegrastats' average
        # column means "since start" too
        self._sums: Dict[str, Tuple[float, int]] = {}

    def open(self) -> None:
        self.sensors = discover(self.root)
        log.info(
            "sysfs telemetry: %d temperature sensor(s), %d power rail(s) under %s",
            len(self.sensors.temperatures),
            len(self.sensors.rails),
            self.root,
        )

    def sample(self) -> Reading:
        rails: Dict[str, RailValues] = {}
        for name, files in self.sensors.rails.items():
            mw = read_rail_mw(files)
            if mw is None:
                rails[name] = (None, None)
                continue
            total, count = self._sums.get(name, (0.0, 0))
            self._sums[name] = (total + mw, count + 1)
            rails[name] = (mw, (total + mw) / (count + 1))
        # summing arbitrary hwmon rails means nothing; only an input rail (or the configured one) counts
        total_mw, source = select_total_power(rails, self.total_power_rail, allow_sum=False)
        return Reading(
            source="sysfs",
            time=time.time(),
            monotonic=time.monotonic(),
            temperatures=read_temperatures(self.sensors),
            power_rails=rails,
            total_power_mw=total_mw,
            total_power_source=source,
        )


def probe_sysfs(root: Path = Path("/")) -> Optional[str]:
    """None when sysfs has at least one sensor under ``root``, else why not."""
    try:
        count = len(discover(root))
    except OSError as exc:
        return f"cannot list sensors under {root}: {exc}"
    if count == 0:
        return f"no thermal zones or hwmon sensors under {root / 'sys' / 'class'}"
    return None
