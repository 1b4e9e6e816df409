"""Power, temperature and load of discrete NVIDIA GPUs through NVML (``nvidia-ml-py``, module ``pynvml``).

For a dGPU machine (a development PC, an x86 edge box). The "total power" here is the GPUs' own board
power, not the machine's: ``total_power_source`` says ``nvml`` so nobody mistakes it for wall power.
Each query is made separately, so a GPU that does not support one (NVML_ERROR_NOT_SUPPORTED) still
gives the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgedet.errors import DependencyError, TelemetryError, require
from edgedet.telemetry.base import PolledReader
from edgedet.telemetry.reading import RailValues, Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    """One GPU's NVML values in plain units; None where NVML had no answer."""

    index: int
    name: str
    power_mw: Optional[float] = None  # nvmlDeviceGetPowerUsage (mW)
    temperature_c: Optional[float] = None  # nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)
    load_pct: Optional[float] = None  # nvmlDeviceGetUtilizationRates().gpu
    clock_mhz: Optional[float] = None  # nvmlDeviceGetClockInfo(NVML_CLOCK_GRAPHICS)
    memory_used_mb: Optional[float] = None  # nvmlDeviceGetMemoryInfo() bytes / 2**20
    memory_total_mb: Optional[float] = None


def reading_from_nvml(gpus: Sequence[GpuSample], now: Optional[float] = None) -> Reading:
    """Sensors are named ``gpu0``, ``gpu1`` ...; GPU load/clock/memory come from the first GPU."""
    temps: Dict[str, Optional[float]] = {}
    rails: Dict[str, RailValues] = {}
    for g in gpus:
        temps[f"gpu{g.index}"] = g.temperature_c
        rails[f"gpu{g.index}"] = (g.power_mw, None)
    powers = [g.power_mw for g in gpus if g.power_mw is not None]
    first = gpus[0] if gpus else None
    return Reading(
        source="nvml",
        time=time.time() if now is None else now,
        monotonic=time.monotonic(),
        temperatures=temps,
        power_rails=rails,
        total_power_mw=float(sum(powers)) if powers else None,
        total_power_source="nvml" if powers else None,
        gpu_load_pct=first.load_pct if first else None,
        gpu_mhz=first.clock_mhz if first else None,
        ram_used_mb=first.memory_used_mb if first else None,
        ram_total_mb=first.memory_total_mb if first else None,
    )


def _pynvml() -> Any:
    return require("pynvml", "nvml", "NVML telemetry")


def _query(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # NVMLError_NotSupported and friends: this value is unknown, go on
        log.debug("NVML query failed: %s", exc)
        return None


def sample_gpus(nvml: Any, handles: Sequence[Tuple[int, str, Any]]) -> List[GpuSample]:
    out: List[GpuSample] = []
    for index, name, h in handles:
        power = _query(nvml.nvmlDeviceGetPowerUsage, h)
        temp = _query(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
        util = _query(nvml.nvmlDeviceGetUtilizationRates, h)
        clock = _query(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_GRAPHICS)
        mem = _query(nvml.nvmlDeviceGetMemoryInfo, h)
        out.append(
            GpuSample(
                index=index,
                name=name,
                power_mw=float(power) if power is not None else None,
                temperature_c=float(temp) if temp is not None else None,
                load_pct=float(util.gpu) if util is not None else None,
                clock_mhz=float(clock) if clock is not None else None,
                memory_used_mb=mem.used / 2**20 if mem is not None else None,
                memory_total_mb=mem.total / 2**20 if mem is not None else None,
            )
        )
    return out


def probe_nvml() -> Optional[str]:
    """None when NVML loads and sees at least one GPU, else why not."""
    try:
        nvml = _pynvml()
    except DependencyError:
        return "nvidia-ml-py is not installed (pip install 'edgedet[nvml]')"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded on a machine without a GPU
        return f"NVML cannot start: {exc}"
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        return f"NVML cannot count GPUs: {exc}"
    finally:
        _query(nvml.nvmlShutdown)
    return None if count > 0 else "NVML sees no GPU"


class NvmlReader(PolledReader):
    name = "nvml"

    def __init__(self, interval_s: float = 5.0, stale_after_s: Optional[float] = None) -> None:
        super().__init__(interval_s, stale_after_s)
        self._nvml: Any = None
        self._handles: List[Tuple[int, str, Any]] = []

    def open(self) -> None:
        nvml = _pynvml()
        try:
            nvml.nvmlInit()
        except Exception as exc:
            raise TelemetryError(f"NVML cannot start: {exc}") from exc
        try:
            handles = []
            for i in range(int(nvml.nvmlDeviceGetCount())):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = _query(nvml.nvmlDeviceGetName, h)
                handles.append((i, str(name) if name is not None else f"gpu{i}", h))
        except Exception as exc:
            _query(nvml.nvmlShutdown)
            raise TelemetryError(f"NVML cannot list GPUs: {exc}") from exc
        if not handles:
            _query(nvml.nvmlShutdown)
            raise TelemetryError("NVML sees no GPU")
        log.info("NVML telemetry: %s", ", ".join(f"gpu{i} {n}" for i, n, _ in handles))
        self._nvml, self._handles = nvml, handles

    @property
    def gpu_names(self) -> List[str]:
        return [name for _, name, _ in self._handles]

    def sample(self) -> Reading:
        if self._nvml is None:
            raise TelemetryError("NVML is not open")
        return reading_from_nvml(sample_gpus(self._nvml, self._handles))

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        self._handles = []
        if nvml is not None:
            _query(nvml.nvmlShutdown)
