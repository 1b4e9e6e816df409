"""Pure parser for one line of ``tegrastats`` output, every JetPack from 4 to 7 (Nano ... Thor).

The line is split into fields by one compiled alternation (each alternative is one known field shape);
whatever no alternative recognises is kept in ``raw``, so an unknown or truncated field never breaks
the rest of the line. No I/O here: the reader thread lives in ``tegrastats.py``.

Field shapes seen on real lines (tests/data/tegrastats/lines.tsv):
  ``07-21-2025 16:33:42``            optional leading timestamp (local time)
  ``RAM 936/3964MB (lfb 366x4MB)``   ``SWAP 0/4096MB (cached 0MB)``   ``IRAM 0/252kB(lfb 252kB)``
  ``CPU [10%@102,off,...]``          per core; older L4T printed ``CPU [10%,3%]@1224``
  ``EMC_FREQ 4%@1600`` / ``0%`` / ``@2133``
  ``GR3D_FREQ 99%@921`` / ``0%@[114]`` / ``39%@[305,0]`` (JetPack 7 Orin) / ``@[0,0,0]`` (Thor)
  ``NVENC off`` ``NVJPG1 729`` ``VIC_FREQ 115`` ``NVENC0_FREQ @0`` ``APE 25`` ``MTS fg 1% bg 9%``
  ``tj@43.906C`` ``CV0@-256C`` (offline) ``cpu@52.968C/52.968C`` (JetPack 7: a second value)
  ``POM_5V_IN 920/920`` (mW, JetPack 4)  ``VDD_IN 2763mW/2846mW`` (JetPack 5/6)
  ``VDD_GPU_SOC 5139mW/5139mW/5139mW`` (JetPack 7: current/average/max)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

from edgedet.telemetry.naming import unique_name

# Below this a temperature is a sensor-offline marker (tegrastats prints -256C), not a reading.
OFFLINE_TEMPERATURE_C = -255.0

_NUM = r"\d+(?:\.\d+)?"
# Each alternative is wrapped in an upper-case group that closes last, so ``match.lastgroup`` names
# the field kind in one step. The named fields share one name prefix so the name is scanned once.
_TOKEN = re.compile(
    rf"""
     (?P<MEM>(?P<mem>RAM|SWAP|IRAM)\ (?P<used>\d+)/(?P<total>\d+)(?P<unit>[kMG]?B)
        (?:\ ?\((?:lfb\ (?:(?P<lfbn>\d+)x)?(?P<lfbs>\d+)(?P<lfbu>[kMG]?B)
                  |cached\ (?P<cached>\d+)(?P<cu>[kMG]?B))\))?(?=\s|$))
    |(?P<CPU>CPU\ \[(?P<cpu>[^\]\s]*)\](?:@(?P<cpumhz>\d+))?(?=\s|$))
    |(?P<MTS>MTS\ fg\ (?P<fg>\d+)%\ bg\ (?P<bg>\d+)%(?=\s|$))
    |(?P<TS>(?P<mo>\d\d)-(?P<dd>\d\d)-(?P<yy>\d{{4}})\ (?P<hh>\d\d):(?P<mi>\d\d):(?P<ss>\d\d)(?=\s|$))
    |(?P<name>[A-Za-z_][\w-]*)
     (?:(?P<TEMP>@(?P<temp>-?{_NUM})C(?:/(?P<temp2>-?{_NUM})C)?(?=\s|$))
       |(?P<RAIL>\ (?P<cur>{_NUM})(?:mW)?/(?P<avg>{_NUM})(?:mW)?(?:/(?P<max>{_NUM})(?:mW)?)?(?=\s|$))
       |(?P<ENG>\ (?P<eval>off|OFF|\d+%@\[[\d,]*\]|@\[[\d,]*\]|\d+%@\d+|\d+%|@\d+|\d+)(?=\s|$))
       |(?P<KEY>\ (?P<kval>[^\s]*\d[^\s]*))
     )
    |(?P<UNK>\S+)
    """,
    re.VERBOSE | re.ASCII,
)
# names that are memory fields: a truncated "RAM 936/39" must not become a power rail
_MEMORY_NAMES = ("RAM", "SWAP", "IRAM")
_CORE = re.compile(r"(?:(\d+)%)?(?:@(\d+))?$")
_ENGINE_VALUE = re.compile(r"(?:(\d+)%)?(?:@)?(?:\[([\d,]*)\]|(\d+))?$")
_UNIT_MB = {"B": 1.0 / (1024 * 1024), "kB": 1.0 / 1024, "MB": 1.0, "GB": 1024.0}


class MemoryUse(NamedTuple):
    """RAM, SWAP or IRAM, in MB whatever unit the line used (IRAM is printed in kB)."""

    used_mb: float
    total_mb: float
    cached_mb: Optional[float] = None  # SWAP only
    lfb_blocks: Optional[int] = None  # RAM: number of largest free blocks
    lfb_block_mb: Optional[float] = None  # RAM: size of one such block; IRAM: largest free block


class CpuCore(NamedTuple):
    online: bool
    load_pct: Optional[float] = None
    mhz: Optional[float] = None


class EngineState(NamedTuple):
    """A clocked unit (GR3D, EMC, NVENC, VIC, APE ...): ``on`` is False when tegrastats printed ``off``.

    ``mhz`` is the highest clock of ``mhz_all`` (JetPack 7 prints one clock per GPC, ``[1300,1300]``).
    """

    on: bool
    load_pct: Optional[float] = None
    mhz: Optional[float] = None
    mhz_all: Tuple[float, ...] = ()


class PowerRail(NamedTuple):
    """One power rail in mW: current, average since tegrastats started, and (JetPack 7) maximum."""

    current_mw: float
    average_mw: Optional[float] = None
    max_mw: Optional[float] = None


@dataclass(frozen=True)
class TegrastatsReading:
    """Everything one tegrastats line says. Missing fields are None or empty, never -1/-256/"N/A".

    The mappings are plain dicts for speed; treat them as read-only.
    """

    timestamp: Optional[datetime] = None
    ram: Optional[MemoryUse] = None
    swap: Optional[MemoryUse] = None
    iram: Optional[MemoryUse] = None
    cpus: Tuple[CpuCore, ...] = ()
    gpu: Optional[EngineState] = None  # GR3D
    emc: Optional[EngineState] = None
    engines: Mapping[str, EngineState] = field(default_factory=dict)  # name without "_FREQ"
    mts_fg_pct: Optional[float] = None
    mts_bg_pct: Optional[float] = None
    # name as printed -> degrees C; None when the sensor is offline (-256C)
    temperatures: Mapping[str, Optional[float]] = field(default_factory=dict)
    # JetPack 7 prints "cpu@52.968C/52.968C"; the second value is undocumented (seen equal to the
    # first, likely a peak), so it is kept apart and never used as the current temperature
    temperatures_second: Mapping[str, Optional[float]] = field(default_factory=dict)
    rails: Mapping[str, PowerRail] = field(default_factory=dict)
    # fields no alternative recognised: "KEY value" pairs, or a lone token mapped to ""
    raw: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing measurable was found (an error message, a blank or garbled line)."""
        return not (self.ram or self.cpus or self.gpu or self.temperatures or self.rails or self.engines)


def _mb(value: str, unit: Optional[str]) -> float:
    return float(value) * _UNIT_MB.get(unit or "MB", 1.0)


@lru_cache(maxsize=4096)
def _temperature(text: str) -> Optional[float]:
    value = float(text)
    return None if value <= OFFLINE_TEMPERATURE_C else value


def _cores(body: str, shared_mhz: Optional[str]) -> Tuple[CpuCore, ...]:
    return tuple(_core(item, shared_mhz) for item in body.split(",") if item)


# Core and engine values repeat from line to line ("0%@729"); their results are immutable, so a small
# cache turns most of them into a dict lookup (this keeps a 14-core line well under 100 µs).
@lru_cache(maxsize=2048)
def _core(item: str, shared_mhz: Optional[str]) -> CpuCore:
    if item.lower() == "off":
        return CpuCore(online=False)
    m = _CORE.match(item)
    if m is None:  # an odd core entry: the core exists, its values are unknown
        return CpuCore(online=True)
    load, mhz = m.group(1), m.group(2) or shared_mhz
    return CpuCore(
        online=True,
        load_pct=float(load) if load is not None else None,
        mhz=float(mhz) if mhz is not None else None,
    )


@lru_cache(maxsize=1024)
def _engine_field(name: str, value: str) -> Tuple[str, Optional[EngineState]]:
    """("VIC_FREQ", "115") -> ("VIC", state); a lower-case name is not an engine (state None)."""
    key = name[: -len("_FREQ")] if name.endswith("_FREQ") else name
    return key, (_engine(value) if name[0].isupper() else None)


@lru_cache(maxsize=1024)
def _engine(value: str) -> Optional[EngineState]:
    if value in ("off", "OFF"):
        return EngineState(on=False)
    m = _ENGINE_VALUE.match(value)
    if m is None:
        return None
    load, array, single = m.groups()
    clocks: Tuple[float, ...] = ()
    if array:
        clocks = tuple(float(c) for c in array.split(",") if c)
    elif single is not None:
        clocks = (float(single),)
    return EngineState(
        on=True,
        load_pct=float(load) if load is not None else None,
        mhz=max(clocks) if clocks else None,
        mhz_all=clocks,
    )


def parse_tegrastats(line: str) -> TegrastatsReading:
    """Parse one tegrastats line. Never raises on odd, unknown or truncated fields."""
    timestamp: Optional[datetime] = None
    memory: Dict[str, MemoryUse] = {}
    cpus: Tuple[CpuCore, ...] = ()
    gpu: Optional[EngineState] = None
    emc: Optional[EngineState] = None
    engines: Dict[str, EngineState] = {}
    mts: Tuple[Optional[float], Optional[float]] = (None, None)
    temps: Dict[str, Optional[float]] = {}
    temps2: Dict[str, Optional[float]] = {}
    rails: Dict[str, PowerRail] = {}
    raw: Dict[str, str] = {}

    for m in _TOKEN.finditer(line):
        kind = m.lastgroup
        g = m.group
        if kind == "TEMP":
            name = g("name")
            if name in temps:
                name = unique_name(name, temps)
            temps[name] = _temperature(g("temp"))
            second = g("temp2")
            if second is not None:
                temps2[name] = _temperature(second)
        elif kind == "ENG":
            key, state = _engine_field(g("name"), g("eval"))
            if state is None:
                raw[g("name")] = g("eval")
            elif key == "GR3D":
                gpu = state
            elif key == "EMC":
                emc = state
            else:
                engines[key] = state
        elif kind == "RAIL" and g("name") in _MEMORY_NAMES:
            raw[g("name")] = g("RAIL").strip()
        elif kind == "RAIL":
            cur, avg, mx = g("cur", "avg", "max")
            rails[unique_name(g("name"), rails)] = PowerRail(
                float(cur), float(avg) if avg is not None else None, float(mx) if mx is not None else None
            )
        elif kind == "MEM":
            lfbn, lfbs, cached, unit = g("lfbn", "lfbs", "cached", "unit")
            memory[g("mem")] = MemoryUse(
                used_mb=_mb(g("used"), unit),
                total_mb=_mb(g("total"), unit),
                cached_mb=_mb(cached, g("cu")) if cached is not None else None,
                lfb_blocks=int(lfbn) if lfbn is not None else None,
                lfb_block_mb=_mb(lfbs, g("lfbu")) if lfbs is not None else None,
            )
        elif kind == "CPU":
            cpus = _cores(g("cpu"), g("cpumhz"))
        elif kind == "TS":
            try:
                yy, mo, dd, hh, mi, ss = (int(v) for v in g("yy", "mo", "dd", "hh", "mi", "ss"))
                timestamp = datetime(yy, mo, dd, hh, mi, ss)
            except ValueError:  # an impossible date: keep the text, not a guess
                raw["timestamp"] = g("TS")
        elif kind == "MTS":
            mts = (float(g("fg")), float(g("bg")))
        elif kind == "KEY":
            raw[g("name")] = g("kval")
        else:
            raw[g("UNK")] = ""

    return TegrastatsReading(
        timestamp=timestamp,
        ram=memory.get("RAM"),
        swap=memory.get("SWAP"),
        iram=memory.get("IRAM"),
        cpus=cpus,
        gpu=gpu,
        emc=emc,
        engines=engines,
        mts_fg_pct=mts[0],
        mts_bg_pct=mts[1],
        temperatures=temps,
        temperatures_second=temps2,
        rails=rails,
        raw=raw,
    )
