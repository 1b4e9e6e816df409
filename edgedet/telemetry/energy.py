"""Energy per processed frame and the telemetry part of the stats message (pure functions).

mJ/frame = total input power (mW) / processed frames per second   (mW = mJ/s)
frames/s per W = processed fps / (total input power / 1000)
Both are None when the total power or the frame rate is unknown or zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from edgedet.telemetry.reading import Reading


def energy_per_frame_mj(total_power_mw: Optional[float], fps: Optional[float]) -> Optional[float]:
    if total_power_mw is None or fps is None or fps <= 0:
        return None
    return total_power_mw / fps


def fps_per_watt(fps: Optional[float], total_power_mw: Optional[float]) -> Optional[float]:
    if fps is None or total_power_mw is None or total_power_mw <= 0:
        return None
    return fps / (total_power_mw / 1000.0)


def _r(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def stats_summary(reading: Optional[Reading], fps: Optional[float]) -> Dict[str, Any]:
    """The telemetry fields of the stats message; every key is present, None when unknown."""
    power = reading.total_power_mw if reading is not None else None
    sensor, temp = reading.max_temperature() if reading is not None else (None, None)
    return {
        "telemetry_source": reading.source if reading is not None else None,
        "power_mw": _r(power, 1),
        "power_source": reading.total_power_source if reading is not None else None,
        "temp_max_c": _r(temp, 3),
        "temp_max_sensor": sensor,
        "gpu_load_pct": _r(reading.gpu_load_pct, 1) if reading is not None else None,
        "mj_per_frame": _r(energy_per_frame_mj(power, fps), 2),
        "fps_per_w": _r(fps_per_watt(fps, power), 3),
    }


# the name the daemon's telemetry payload uses for the same summary
energy_summary = stats_summary


@dataclass(frozen=True)
class EnergyWindow:
    seconds: float
    frames: int
    energy_mj: Optional[float]  # None: no power reading during the window
    average_power_mw: Optional[float]
    fps: float
    mj_per_frame: Optional[float]
    fps_per_w: Optional[float]


class EnergyMeter:
    """Integrates total power over time and counts frames, for mJ/frame over a stats window.

    More faithful than one instantaneous reading divided by fps when power swings between readings:
    ``add_reading`` each telemetry sample, ``add_frames`` as frames finish, ``window()`` at each stats
    message (it starts the next window). Power is held constant between readings (left Riemann sum).
    Not thread-safe: call it from one thread (the app's stats timer), or guard it.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._frames = 0
        self._energy_mj = 0.0
        self._covered_s = 0.0  # seconds of the window with a known power
        self._power_mw: Optional[float] = None
        self._power_since = self._start

    def add_reading(self, reading: Optional[Reading]) -> None:
        self._advance()
        self._power_mw = reading.total_power_mw if reading is not None else None

    def add_frames(self, count: int = 1) -> None:
        self._frames += count

    def _advance(self) -> None:
        now = self._clock()
        if self._power_mw is not None:
            dt = now - self._power_since
            self._energy_mj += self._power_mw * dt
            self._covered_s += dt
        self._power_since = now

    def window(self) -> EnergyWindow:
        self._advance()
        now = self._clock()
        seconds = max(now - self._start, 1e-9)
        fps = self._frames / seconds
        avg = self._energy_mj / self._covered_s if self._covered_s > 0 else None
        # only a window whose power was known most of the time gives an energy figure
        known = avg is not None and self._covered_s >= 0.5 * seconds
        energy = avg * seconds if known and avg is not None else None
        result = EnergyWindow(
            seconds=seconds,
            frames=self._frames,
            energy_mj=energy,
            average_power_mw=avg if known else None,
            fps=fps,
            mj_per_frame=energy / self._frames if energy is not None and self._frames > 0 else None,
            fps_per_w=fps_per_watt(fps, avg if known else None) if self._frames > 0 else None,
        )
        self._start = now
        self._frames = 0
        self._energy_mj = 0.0
        self._covered_s = 0.0
        return result
