"""Power and temperature from jetson-stats (``jtop``), which talks to jtop.service over /run/jtop.sock.

Kept thin: the library is imported lazily and only ``power``/``temperature`` (plus GPU, CPU and RAM
when present) are read, in the shapes jetson-stats 4.x documents:
  ``power``       = {"rail": {NAME: {"volt" mV, "curr" mA, "power" mW, "avg" mW, "online"...}},
                     "tot": {"power" mW, "avg" mW, "name": "VDD_IN" (absent when it is a sum)}}
  ``temperature`` = {NAME: {"online": bool, "temp" C (-256 offline), "max", "crit"}}
  ``gpu``         = {NAME: {"status": {"load" %}, "freq": {"cur" kHz}}}
  ``cpu``         = {"cpu": [{"online": bool, "idle" %, "freq": {"cur" kHz}}]}
  ``memory``      = {"RAM": {"tot" kB, "used" kB}}
The daemon's user must reach the socket (group ``jtop``).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgedet.errors import TelemetryError, require
from edgedet.telemetry.base import PolledReader
from edgedet.telemetry.reading import RailValues, Reading, select_total_power

log = logging.getLogger(__name__)

JTOP_SOCKET = Path("run") / "jtop.sock"
_OFFLINE_C = -255.0


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reading_from_jtop(
    power: Optional[Mapping[str, Any]],
    temperature: Optional[Mapping[str, Any]],
    gpu: Optional[Mapping[str, Any]] = None,
    cpu: Optional[Mapping[str, Any]] = None,
    memory: Optional[Mapping[str, Any]] = None,
    total_power_rail: Optional[str] = None,
    now: Optional[float] = None,
) -> Reading:
    """Convert jetson-stats' dicts to a Reading; anything missing or odd becomes None."""
    rails: Dict[str, RailValues] = {}
    tot: Mapping[str, Any] = {}
    if isinstance(power, Mapping):
        for name, rail in (power.get("rail") or {}).items():
            if isinstance(rail, Mapping) and rail.get("online", True) is not False:
                rails[str(name)] = (_num(rail.get("power")), _num(rail.get("avg")))
        tot = power.get("tot") or {}
        # jetson-stats moves the input rail (VDD_IN/POM_5V_IN) out of "rail" into "tot": put it back
        tot_name = tot.get("name") if isinstance(tot, Mapping) else None
        if tot_name and tot_name not in rails:
            rails[str(tot_name)] = (_num(tot.get("power")), _num(tot.get("avg")))
    if total_power_rail:
        total, source = select_total_power(rails, total_power_rail)
    elif isinstance(tot, Mapping) and _num(tot.get("power")) is not None:
        # jetson-stats' total: the input rail when there is one, else its sum of the rails
        total, source = _num(tot.get("power")), str(tot.get("name") or "jtop")
    else:
        total, source = select_total_power(rails)

    temps: Dict[str, Optional[float]] = {}
    for name, sensor in (temperature or {}).items():
        value = _num(sensor.get("temp")) if isinstance(sensor, Mapping) else _num(sensor)
        online = sensor.get("online", True) if isinstance(sensor, Mapping) else True
        temps[str(name)] = value if online and value is not None and value > _OFFLINE_C else None

    gpu_load = gpu_mhz = None
    if isinstance(gpu, Mapping):
        for info in gpu.values():  # the first (integrated) GPU
            if isinstance(info, Mapping):
                gpu_load = _num((info.get("status") or {}).get("load"))
                khz = _num((info.get("freq") or {}).get("cur"))
                gpu_mhz = khz / 1000.0 if khz is not None else None
                break

    cores: Tuple[Optional[float], ...] = ()
    if isinstance(cpu, Mapping):
        loads: List[Optional[float]] = []
        for core in cpu.get("cpu") or []:
            idle = _num(core.get("idle")) if isinstance(core, Mapping) else None
            online = isinstance(core, Mapping) and core.get("online", True)
            loads.append(100.0 - idle if online and idle is not None else None)
        cores = tuple(loads)

    ram_used = ram_total = None
    if isinstance(memory, Mapping) and isinstance(memory.get("RAM"), Mapping):
        used, tot_kb = _num(memory["RAM"].get("used")), _num(memory["RAM"].get("tot"))
        ram_used = used / 1024.0 if used is not None else None
        ram_total = tot_kb / 1024.0 if tot_kb is not None else None

    return Reading(
        source="jtop",
        time=time.time() if now is None else now,
        monotonic=time.monotonic(),
        temperatures=temps,
        power_rails=rails,
        total_power_mw=total,
        total_power_source=source if total is not None else None,
        gpu_load_pct=gpu_load,
        gpu_mhz=gpu_mhz,
        cpu_loads_pct=cores,
        ram_used_mb=ram_used,
        ram_total_mb=ram_total,
    )


def probe_jtop(root: Path = Path("/")) -> Optional[str]:
    """None when jetson-stats is importable and jtop.service's socket accepts a connection."""
    if importlib.util.find_spec("jtop") is None:
        return "jetson-stats is not installed (pip install 'edgedet[jetson]')"
    path = root / JTOP_SOCKET
    if not path.exists():
        return f"{path} does not exist (is jtop.service running?)"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(path))
    except OSError as exc:
        return f"cannot connect to {path}: {exc} (is the user in group 'jtop'?)"
    return None


class JtopReader(PolledReader):
    name = "jtop"

    def __init__(
        self,
        interval_s: float = 5.0,
        total_power_rail: Optional[str] = None,
        stale_after_s: Optional[float] = None,
    ) -> None:
        super().__init__(interval_s, stale_after_s)
        self.total_power_rail = total_power_rail
        self._jetson: Any = None

    def open(self) -> None:
        module: Any = require("jtop", "jetson", "jtop telemetry")
        # jtop.service caps how often it samples; ask for our interval (it may serve a shorter one)
        jetson = module.jtop(interval=self.interval_s)
        try:
            jetson.start()
        except Exception as exc:  # JtopException, OSError: the service is down or unreachable
            raise TelemetryError(f"jtop: cannot connect to jtop.service: {exc}") from exc
        self._jetson = jetson

    def sample(self) -> Reading:
        jetson = self._jetson
        if jetson is None:
            raise TelemetryError("jtop is not connected")
        if not jetson.ok(spin=True):  # non-blocking; raises the library's stored error, if any
            raise TelemetryError("jtop lost its connection to jtop.service")
        return reading_from_jtop(
            getattr(jetson, "power", None),
            getattr(jetson, "temperature", None),
            gpu=_maybe(jetson, "gpu"),
            cpu=_maybe(jetson, "cpu"),
            memory=_maybe(jetson, "memory"),
            total_power_rail=self.total_power_rail,
        )

    def close(self) -> None:
        jetson, self._jetson = self._jetson, None
        if jetson is not None:
            try:
                jetson.close()
            except Exception as exc:
                log.debug("jtop close: %s", exc)


def _maybe(obj: Any, attr: str) -> Optional[Mapping[str, Any]]:
    """Optional extras: a property that fails on some boards must not cost the power reading."""
    try:
        value = getattr(obj, attr)
        if value is None or isinstance(value, Mapping):
            return value
        # jetson-stats wraps some as dict-like classes (GPU, Memory) that are not Mapping subclasses
        return dict(value.items())
    except Exception:
        return None
