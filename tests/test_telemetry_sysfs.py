"""The sysfs reader against a temporary tree laid out like /sys/class/{thermal,hwmon}, and the real /sys."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict

import pytest

from edgedet.runtime.worker import Worker
from edgedet.telemetry.config import TelemetryConfig
from edgedet.telemetry.factory import open_telemetry, probe
from edgedet.telemetry.sysfs import SysfsReader, discover, probe_sysfs
from tests.support.waiting import wait_for


def write_tree(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def jetson_like_sys(root: Path) -> None:
    """Thermal zones as on an Orin (names from its thermal_zone*/type) and hwmon as on a PC + INA3221."""
    write_tree(
        root,
        {
            "sys/class/thermal/thermal_zone0/type": "cpu-thermal",
            "sys/class/thermal/thermal_zone0/temp": "43906",
            "sys/class/thermal/thermal_zone1/type": "tj-thermal",
            "sys/class/thermal/thermal_zone1/temp": "45843",
            "sys/class/thermal/thermal_zone2/type": "cv0-thermal",
            "sys/class/thermal/thermal_zone2/temp": "-256000",  # offline
            "sys/class/thermal/thermal_zone10/type": "acpitz",
            "sys/class/thermal/thermal_zone10/temp": "27800",
            "sys/class/thermal/thermal_zone11/type": "acpitz",  # a repeated type keeps both
            "sys/class/thermal/thermal_zone11/temp": "29800",
            # INA3221 on JetPack 5+: voltage (mV) and current (mA) per labelled channel
            "sys/class/hwmon/hwmon0/name": "ina3221",
            "sys/class/hwmon/hwmon0/in1_label": "VDD_IN",
            "sys/class/hwmon/hwmon0/in1_input": "5000",
            "sys/class/hwmon/hwmon0/curr1_input": "860",
            "sys/class/hwmon/hwmon0/in2_label": "VDD_CPU_GPU_CV",
            "sys/class/hwmon/hwmon0/in2_input": "5000",
            "sys/class/hwmon/hwmon0/curr2_input": "114",
            "sys/class/hwmon/hwmon0/in3_label": "NC",
            "sys/class/hwmon/hwmon0/in3_input": "0",
            "sys/class/hwmon/hwmon0/curr3_input": "0",
            "sys/class/hwmon/hwmon0/in7_label": "sum of shunt voltages",
            "sys/class/hwmon/hwmon0/in7_input": "40",
            "sys/class/hwmon/hwmon0/curr7_input": "974",
            "sys/class/hwmon/hwmon1/name": "coretemp",
            "sys/class/hwmon/hwmon1/temp1_label": "Package id 0",
            "sys/class/hwmon/hwmon1/temp1_input": "52000",
            "sys/class/hwmon/hwmon1/temp2_input": "50000",
            "sys/class/hwmon/hwmon2/name": "amdgpu",
            "sys/class/hwmon/hwmon2/power1_input": "15250000",  # µW
        },
    )
    # a zone whose temp cannot be read (as EINVAL on a real offline zone): a directory fails read_text
    (root / "sys/class/thermal/thermal_zone3").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone3/type").write_text("gpu-thermal\n")
    (root / "sys/class/thermal/thermal_zone3/temp").mkdir()


def test_discover_and_read_a_laid_out_tree(tmp_path: Path) -> None:
    jetson_like_sys(tmp_path)
    sensors = discover(tmp_path)
    assert list(sensors.temperatures) == [
        "cpu-thermal",
        "tj-thermal",
        "cv0-thermal",
        "gpu-thermal",
        "acpitz",
        "acpitz_2",
        "coretemp/Package id 0",
        "coretemp/temp2",
    ]
    assert list(sensors.rails) == ["VDD_IN", "VDD_CPU_GPU_CV", "amdgpu/power1"]  # NC, sum skipped

    reader = SysfsReader(interval_s=1.0, root=tmp_path)
    reader.open()
    r = reader.sample()
    assert r.source == "sysfs"
    assert r.temperatures == {
        "cpu-thermal": 43.906,
        "tj-thermal": 45.843,
        "cv0-thermal": None,
        "gpu-thermal": None,
        "acpitz": 27.8,
        "acpitz_2": 29.8,
        "coretemp/Package id 0": 52.0,
        "coretemp/temp2": 50.0,
    }
    assert r.temperature("tj") == 45.843  # the throttle sensor name works across readers
    assert r.power_rails["VDD_IN"] == (4300.0, 4300.0)  # 5000 mV * 860 mA
    assert r.power_rails["VDD_CPU_GPU_CV"] == (570.0, 570.0)
    assert r.power_rails["amdgpu/power1"] == (15250.0, 15250.0)
    assert (r.total_power_mw, r.total_power_source) == (4300.0, "VDD_IN")

    # values change between samples; the average is the mean since start
    (tmp_path / "sys/class/hwmon/hwmon0/curr1_input").write_text("1000\n")
    (tmp_path / "sys/class/thermal/thermal_zone1/temp").write_text("46500\n")
    r = reader.sample()
    assert r.power_rails["VDD_IN"] == (5000.0, 4650.0)
    assert r.temperature("tj") == 46.5
    json.dumps(r.to_payload())


def test_no_input_rail_means_no_total_unless_configured(tmp_path: Path) -> None:
    write_tree(
        tmp_path, {"sys/class/hwmon/hwmon0/name": "amdgpu", "sys/class/hwmon/hwmon0/power1_input": "9000000"}
    )
    reader = SysfsReader(root=tmp_path)
    reader.open()
    assert reader.sample().total_power_mw is None  # unrelated sensors are never summed
    reader = SysfsReader(root=tmp_path, total_power_rail="amdgpu/power1")
    reader.open()
    assert reader.sample().total_power_mw == 9000.0


def test_reader_thread_and_auto_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jetson_like_sys(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no tegrastats here
    cfg = TelemetryConfig(interval_s=0.1)
    reasons = {name: probe(name, cfg, tmp_path) for name in ("tegrastats", "jtop", "nvml", "sysfs")}
    assert reasons["sysfs"].available
    assert not reasons["tegrastats"].available and not reasons["jtop"].available
    reader = open_telemetry(cfg, root=tmp_path)
    expected = "nvml" if reasons["nvml"].available else "sysfs"  # a GPU machine has NVML first
    assert reader is not None and reader.name == expected
    if expected != "sysfs":
        return
    assert isinstance(reader, SysfsReader)
    reader.start()
    try:
        wait_for(lambda: reader.samples >= 2, 10, "two sysfs samples")
        latest = reader.latest()
        assert latest is not None and latest.temperature("cpu") == 43.906
        assert reader.thread is not None and reader.thread.name == "telemetry-sysfs"
    finally:
        reader.stop()
    assert reader.thread is None


def test_reader_is_a_worker_whose_heartbeat_moves_between_samples(tmp_path: Path) -> None:
    """A long interval must not look like a hung thread: the heartbeat is beaten about once a second."""
    jetson_like_sys(tmp_path)
    reader = SysfsReader(interval_s=60.0, root=tmp_path)
    assert isinstance(reader, Worker)
    reader.start()
    try:
        started = time.monotonic()
        wait_for(
            lambda: time.monotonic() - started > 2.5 and reader.heartbeat_age < 1.5,
            10,
            "a heartbeat newer than the only sample",
        )
        assert reader.samples == 1 and reader.failure is None
    finally:
        reader.stop()
    assert not reader.alive


def test_sysfs_without_sensors_gives_empty_readings_and_type_sysfs_is_honoured(tmp_path: Path) -> None:
    assert probe_sysfs(tmp_path) is not None
    reader = SysfsReader(root=tmp_path)
    reader.open()
    r = reader.sample()
    assert r.temperatures == {} and r.power_rails == {} and r.total_power_mw is None
    # type sysfs is honoured even with zero sensors (empty readings), auto would skip it
    assert open_telemetry(TelemetryConfig(type="sysfs"), root=tmp_path) is not None


def test_this_machines_real_sys() -> None:
    """Whatever /sys has here (possibly nothing): discovery and sampling must not fail."""
    reader = SysfsReader(interval_s=1.0, root=Path("/"))
    reader.open()
    r = reader.sample()
    for name, value in r.temperatures.items():
        assert isinstance(name, str)
        assert value is None or -60.0 < value < 150.0
    for cur, _avg in r.power_rails.values():
        assert cur is None or cur >= 0
    json.dumps(r.to_payload())
    assert (probe_sysfs(Path("/")) is None) == (len(reader.sensors) > 0)
