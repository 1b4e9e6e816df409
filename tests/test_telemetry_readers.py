"""jtop and NVML conversions (their libraries/hardware are absent here), reader selection, the interface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedet.errors import DependencyError, TelemetryError
from edgedet.telemetry.base import TelemetryReader
from edgedet.telemetry.config import TelemetryConfig
from edgedet.telemetry.factory import build_reader, open_telemetry, probe, probe_all
from edgedet.telemetry.jtop import probe_jtop, reading_from_jtop
from edgedet.telemetry.nvml import GpuSample, NvmlReader, probe_nvml, reading_from_nvml

# Shaped as jetson-stats 4.x documents jetson.power / .temperature / .gpu / .cpu / .memory (jtop/jtop.py
# docstrings; reference section 4), with the values of the recorded Orin NX 16GB JetPack 6.2 line
# "cv0@41.156C cpu@45.843C ... VDD_IN 4304mW/4304mW VDD_CPU_GPU_CV 573mW/573mW VDD_SOC 1218mW/1218mW".
JTOP_POWER = {
    "rail": {
        "VDD_CPU_GPU_CV": {"online": True, "type": "INA3221", "status": "ok", "volt": 5000, "curr": 114,
                           "warn": 32760, "crit": 32760, "power": 573, "avg": 573},
        "VDD_SOC": {"online": True, "type": "INA3221", "status": "ok", "volt": 5000, "curr": 243,
                    "warn": 32760, "crit": 32760, "power": 1218, "avg": 1218},
    },
    # jetson-stats moves the input rail out of "rail" into "tot", with its name
    "tot": {"online": True, "type": "INA3221", "status": "ok", "volt": 5000, "curr": 860, "warn": 32760,
            "crit": 32760, "power": 4304, "avg": 4304, "name": "VDD_IN"},
}  # fmt: skip
JTOP_TEMPERATURE = {
    "cpu": {"online": True, "temp": 45.843, "max": 105.0, "crit": 105.0},
    "cv0": {"online": True, "temp": 41.156, "max": 105.0, "crit": 105.0},
    "cv1": {"online": False, "temp": -256},
    "gpu": {"online": True, "temp": 43.406, "max": 105.0, "crit": 105.0},
    "tj": {"online": True, "temp": 45.843, "max": 105.0, "crit": 105.0},
}
JTOP_GPU = {
    "gpu": {"type": "integrated",
            "status": {"railgate": False, "tpc_pg_mask": False, "3d_scaling": True, "load": 12.5},
            "freq": {"governor": "nvhost_podgov", "cur": 306000, "max": 918000, "min": 306000,
                     "GPC": [306000, 306000]}},
}  # fmt: skip
JTOP_CPU = {
    "total": {"user": 0.5, "nice": 0.0, "system": 0.5, "idle": 99.0},
    "cpu": [
        {"online": True, "governor": "schedutil", "freq": {"min": 115200, "max": 1984000, "cur": 729600},
         "user": 0.5, "nice": 0.0, "system": 0.5, "idle": 99.0, "model": "ARMv8 Processor rev 1 (v8l)"},
        {"online": False, "governor": "schedutil", "freq": {"min": 0, "max": 0, "cur": 0}},
    ],
}  # fmt: skip
JTOP_MEMORY = {"RAM": {"tot": 16032016, "used": 1253376, "free": 13000000, "cached": 500000, "lfb": 8}}


def test_jtop_dicts_to_reading() -> None:
    r = reading_from_jtop(JTOP_POWER, JTOP_TEMPERATURE, JTOP_GPU, JTOP_CPU, JTOP_MEMORY)
    assert r.source == "jtop"
    assert r.power_rails == {
        "VDD_CPU_GPU_CV": (573.0, 573.0),
        "VDD_SOC": (1218.0, 1218.0),
        "VDD_IN": (4304.0, 4304.0),
    }
    assert (r.total_power_mw, r.total_power_source) == (4304.0, "VDD_IN")
    assert r.temperatures == {"cpu": 45.843, "cv0": 41.156, "cv1": None, "gpu": 43.406, "tj": 45.843}
    assert (r.gpu_load_pct, r.gpu_mhz) == (12.5, 306.0)
    assert r.cpu_loads_pct == (1.0, None)
    assert r.ram_used_mb == pytest.approx(1253376 / 1024) and r.ram_total_mb == pytest.approx(16032016 / 1024)
    json.dumps(r.to_payload())


def test_jtop_sum_total_configured_rail_and_missing_parts() -> None:
    # a board without an input rail: jetson-stats' "tot" is its sum, without a name
    power = {"rail": {"VDD_GPU_SOC": {"power": 4788, "avg": 4788}, "VDD_CPU_CV": {"power": 798, "avg": 798},
                      "VIN_SYS_5V0": {"power": 3842, "avg": 3842}},
             "tot": {"power": 9428, "avg": 9428}}  # fmt: skip
    r = reading_from_jtop(power, {})
    assert (r.total_power_mw, r.total_power_source) == (9428.0, "jtop")
    r = reading_from_jtop(power, {}, total_power_rail="VIN_SYS_5V0")
    assert (r.total_power_mw, r.total_power_source) == (3842.0, "VIN_SYS_5V0")
    r = reading_from_jtop({}, {"x": {"online": True, "temp": "n/a"}})
    assert r.total_power_mw is None and r.temperatures == {"x": None} and r.gpu_load_pct is None
    r = reading_from_jtop(None, None)
    assert r.temperatures == {} and r.power_rails == {}


def test_jtop_is_skipped_with_a_reason_here(tmp_path: Path) -> None:
    reason = probe_jtop(tmp_path)
    assert reason is not None
    assert "jetson-stats" in reason or "jtop.sock" in reason
    with pytest.raises((TelemetryError, DependencyError)):
        open_telemetry(TelemetryConfig(type="jtop"), root=tmp_path)


def test_nvml_samples_to_reading() -> None:
    gpus = [
        GpuSample(0, "NVIDIA H100 80GB HBM3", power_mw=71234.0, temperature_c=34.0, load_pct=0.0,
                  clock_mhz=345.0, memory_used_mb=512.0, memory_total_mb=81559.0),
        GpuSample(1, "NVIDIA H100 80GB HBM3", power_mw=None, temperature_c=None),  # NOT_SUPPORTED answers
    ]  # fmt: skip
    r = reading_from_nvml(gpus)
    assert r.source == "nvml"
    assert r.temperatures == {"gpu0": 34.0, "gpu1": None}
    assert r.power_rails == {"gpu0": (71234.0, None), "gpu1": (None, None)}
    assert (r.total_power_mw, r.total_power_source) == (71234.0, "nvml")
    assert (r.gpu_load_pct, r.gpu_mhz, r.ram_total_mb) == (0.0, 345.0, 81559.0)
    empty = reading_from_nvml([])
    assert empty.total_power_mw is None and empty.total_power_source is None


def test_nvml_for_real_or_skipped_with_a_reason() -> None:
    """Here (no GPU) auto must skip NVML with a reason; on a GPU machine the reader reads real values."""
    reason = probe_nvml()
    if reason is not None:
        assert "nvidia-ml-py" in reason or "NVML" in reason
        result = probe("nvml", TelemetryConfig())
        assert not result.available and result.reason == reason
        with pytest.raises((TelemetryError, DependencyError)):
            NvmlReader().open()
        return
    reader = NvmlReader(interval_s=1.0)
    reader.open()
    try:
        r = reader.sample()
    finally:
        reader.close()
    assert r.source == "nvml" and reader.gpu_names == []  # closed
    assert r.temperatures["gpu0"] is not None and 0 < r.temperatures["gpu0"] < 110
    assert r.total_power_mw is not None and r.total_power_mw > 1000  # a datacentre GPU idles at tens of W
    assert r.gpu_mhz is not None and r.ram_total_mb is not None and r.ram_total_mb > 1000
    print("NVML reading:", json.dumps(r.to_payload()))


def test_none_and_auto_with_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_telemetry(TelemetryConfig(type="none")) is None
    monkeypatch.setenv("PATH", str(tmp_path))
    probes = probe_all(TelemetryConfig(), tmp_path)
    assert [p.name for p in probes] == ["tegrastats", "jtop", "nvml", "sysfs"]
    assert all(p.reason for p in probes if p.name != "nvml")
    reader = open_telemetry(TelemetryConfig(), root=tmp_path)
    if probe_nvml() is None:
        assert reader is not None and reader.name == "nvml"
    else:
        assert reader is None


def test_every_reader_honours_the_interface(tmp_path: Path) -> None:
    cfg = TelemetryConfig()
    for name in ("tegrastats", "jtop", "nvml", "sysfs"):
        reader = build_reader(name, cfg, tmp_path)
        assert isinstance(reader, TelemetryReader)
        assert reader.name == name
        assert reader.latest() is None  # nothing before start
        reader.stop()  # stopping a reader that never started is harmless


def test_config_is_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TelemetryConfig(type="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TelemetryConfig(restart_min_s=10, restart_max_s=1)
    with pytest.raises(ValidationError):
        TelemetryConfig.model_validate({"intervall_s": 1})
