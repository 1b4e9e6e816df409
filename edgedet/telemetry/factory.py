"""Choose the telemetry reader from the config: one named type, or the first available for ``auto``.

``auto`` tries, in order: tegrastats (the executable is found), jtop (jetson-stats importable and its
socket accepts a connection), NVML (nvidia-ml-py importable and a GPU present), sysfs (at least one
thermal zone or hwmon sensor); else no telemetry. Each skipped reader is logged with its reason.
A named type that is unavailable is an error (TelemetryError/DependencyError), never a silent skip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from edgedet.errors import TelemetryError
from edgedet.telemetry.base import TelemetryReader
from edgedet.telemetry.config import TelemetryConfig
from edgedet.telemetry.jtop import JtopReader, probe_jtop
from edgedet.telemetry.nvml import NvmlReader, probe_nvml
from edgedet.telemetry.sysfs import SysfsReader, probe_sysfs
from edgedet.telemetry.tegrastats import TegrastatsReader, find_tegrastats

log = logging.getLogger(__name__)

AUTO_ORDER = ("tegrastats", "jtop", "nvml", "sysfs")


@dataclass(frozen=True)
class Probe:
    name: str
    reason: Optional[str]  # None: available

    @property
    def available(self) -> bool:
        return self.reason is None


def probe(name: str, cfg: TelemetryConfig, root: Path = Path("/")) -> Probe:
    """Whether one reader could start here, and if not, why (cheap: no thread, no process)."""
    if name == "tegrastats":
        found = find_tegrastats(cfg.tegrastats_path)
        return Probe(name, None if found else f"'{cfg.tegrastats_path}' is not an executable on PATH")
    if name == "jtop":
        return Probe(name, probe_jtop(root))
    if name == "nvml":
        return Probe(name, probe_nvml())
    if name == "sysfs":
        return Probe(name, probe_sysfs(root))
    return Probe(name, f"unknown telemetry type '{name}'")


def probe_all(cfg: TelemetryConfig, root: Path = Path("/")) -> List[Probe]:
    return [probe(name, cfg, root) for name in AUTO_ORDER]


def build_reader(name: str, cfg: TelemetryConfig, root: Path = Path("/")) -> TelemetryReader:
    """Construct (not start) the named reader."""
    if name == "tegrastats":
        return TegrastatsReader(
            interval_s=cfg.interval_s,
            path=cfg.tegrastats_path,
            total_power_rail=cfg.total_power_rail,
            restart_min_s=cfg.restart_min_s,
            restart_max_s=cfg.restart_max_s,
        )
    if name == "jtop":
        return JtopReader(cfg.interval_s, total_power_rail=cfg.total_power_rail)
    if name == "nvml":
        return NvmlReader(cfg.interval_s)
    if name == "sysfs":
        return SysfsReader(cfg.interval_s, root=root, total_power_rail=cfg.total_power_rail)
    raise TelemetryError(f"unknown telemetry type '{name}'")


def open_telemetry(cfg: TelemetryConfig, root: Path = Path("/")) -> Optional[TelemetryReader]:
    """The reader the config asks for (not started yet), or None for ``none``/nothing available.

    For a named type the availability check runs first so that the error names the cause (missing
    executable, package, service or GPU). ``start()`` may still raise if the source fails between
    the check and the start: the app treats that like any other unavailable reader.
    """
    if cfg.type == "none":
        return None
    if cfg.type != "auto":
        result = probe(cfg.type, cfg, root)
        if not result.available and cfg.type != "sysfs":
            raise TelemetryError(f"telemetry.type is {cfg.type}, but {result.reason}")
        if not result.available:  # sysfs with zero sensors still runs: its readings are just empty
            log.warning("telemetry sysfs: %s", result.reason)
        return build_reader(cfg.type, cfg, root)
    skipped: List[str] = []
    for name in AUTO_ORDER:
        result = probe(name, cfg, root)
        if result.available:
            if skipped:
                log.info("telemetry: using %s (skipped %s)", name, "; ".join(skipped))
            else:
                log.info("telemetry: using %s", name)
            return build_reader(name, cfg, root)
        skipped.append(f"{name}: {result.reason}")
    log.info("telemetry: no source available (%s)", "; ".join(skipped))
    return None
