"""Power and temperature readings: tegrastats, jtop, NVML, sysfs; energy per frame; throttling policy.

Typical use by the app (see each module for details)::

    reader = open_telemetry(cfg.telemetry)      # None: type none, or nothing available
    if reader is not None:
        reader.start()                          # its own thread; raises TelemetryError/DependencyError
    policy = ThrottlePolicy(cfg.telemetry.throttle)
    ...every telemetry period:
        reading = reader.latest()               # None until the first reading, or when stale
        decision = policy.update(reading)       # set_max_fps(decision.max_fps) on every camera
        payload = reading.to_payload()          # the "readings" of the telemetry message
    reader.stop()
"""

from edgedet.telemetry.base import TelemetryReader
from edgedet.telemetry.energy import EnergyMeter, energy_per_frame_mj, fps_per_watt, stats_summary
from edgedet.telemetry.factory import open_telemetry, probe_all
from edgedet.telemetry.reading import Reading
from edgedet.telemetry.tegrastats_parse import TegrastatsReading, parse_tegrastats
from edgedet.telemetry.throttle import ThrottleDecision, ThrottlePolicy

__all__ = [
    "EnergyMeter",
    "Reading",
    "TegrastatsReading",
    "TelemetryReader",
    "ThrottleDecision",
    "ThrottlePolicy",
    "energy_per_frame_mj",
    "fps_per_watt",
    "open_telemetry",
    "parse_tegrastats",
    "probe_all",
    "stats_summary",
]
