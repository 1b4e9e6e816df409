"""The normalised Reading, its payload, energy per frame, and readings reaching a real MQTT subscriber."""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any, Dict, List

import paho.mqtt.client as mqtt
import pytest

from edgedet.telemetry.energy import EnergyMeter, energy_per_frame_mj, fps_per_watt, stats_summary
from edgedet.telemetry.reading import Reading, find_temperature, reading_from_tegrastats
from edgedet.telemetry.tegrastats_parse import parse_tegrastats
from tests.support.broker import Mosquitto
from tests.test_telemetry_parse import ROWS


def real_reading(device_prefix: str, nth: int = 0) -> Reading:
    lines = [line for device, _jp, line in ROWS if device.startswith(device_prefix)]
    return reading_from_tegrastats(parse_tegrastats(lines[nth]), now=1700000000.25)


def test_payload_is_json_and_carries_real_values() -> None:
    r = real_reading("Jetson AGX Orin 32GB")
    payload = json.loads(json.dumps(r.to_payload()))
    assert payload["source"] == "tegrastats"
    assert payload["time"] == 1700000000.25
    assert payload["temperatures_c"]["CV0"] is None  # offline sensor: null, never -256
    assert payload["temperatures_c"]["CPU"] == 43.5
    assert payload["power_mw"]["VIN_SYS_5V0"] == {"current": 3842.0, "average": 3842.0}
    assert payload["total_power_mw"] == 10135.0 and payload["total_power_source"] == "sum"
    assert payload["temp_max_c"] == 43.5 and payload["temp_max_sensor"] == "CPU"
    assert payload["gpu_load_pct"] == 0 and payload["gpu_mhz"] == 114
    assert len(payload["cpu_load_pct"]) == 12
    assert payload["ram_used_mb"] == 1205 and payload["ram_total_mb"] == 30623


def test_max_temperature_skips_the_pmic_placeholder() -> None:
    r = real_reading("Jetson TX2")  # PMIC@100C is a fixed value on TX2/Xavier
    assert r.temperatures["PMIC"] == 100.0
    assert r.max_temperature() == ("PLL", 42.5)  # first of the 42.5C sensors, not PMIC


def test_sensor_lookup_is_lenient_across_readers() -> None:
    temps = {"tj-thermal": 50.0, "CPU-therm": 40.0, "GPU": 30.0, "cv0": None}
    assert find_temperature(temps, "tj") == 50.0
    assert find_temperature(temps, "cpu") == 40.0
    assert find_temperature(temps, "gpu") == 30.0
    assert find_temperature(temps, "cv0") is None
    assert find_temperature(temps, "soc0") is None
    assert real_reading("Jetson Orin Nano").temperature("TJ") == 49.156


def test_energy_per_frame_and_fps_per_watt() -> None:
    r = real_reading("Jetson Orin Nano")  # VDD_IN 4761 mW
    assert energy_per_frame_mj(r.total_power_mw, 30.0) == pytest.approx(4761 / 30)
    assert fps_per_watt(30.0, r.total_power_mw) == pytest.approx(30 / 4.761)
    assert energy_per_frame_mj(None, 30.0) is None and energy_per_frame_mj(4761, 0.0) is None
    assert fps_per_watt(30.0, None) is None and fps_per_watt(None, 4761) is None

    summary = stats_summary(r, 30.0)
    assert summary == {
        "telemetry_source": "tegrastats",
        "power_mw": 4761.0,
        "power_source": "VDD_IN",
        "temp_max_c": 49.156,
        "temp_max_sensor": "tj",
        "gpu_load_pct": 0.0,
        "mj_per_frame": 158.7,
        "fps_per_w": 6.301,
    }
    no_rail = stats_summary(real_reading("Jetson Nano", 2), 30.0)  # a Nano line without rails
    assert no_rail["power_mw"] is None and no_rail["mj_per_frame"] is None and no_rail["fps_per_w"] is None
    assert no_rail["temp_max_c"] == 50.0  # AO@50C; PMIC@50C skipped
    empty = stats_summary(None, 30.0)
    assert set(empty) == set(summary) and all(v is None for v in empty.values())


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_energy_meter_integrates_power_over_the_window() -> None:
    clock = FakeClock()
    meter = EnergyMeter(clock=clock)
    meter.add_reading(Reading("x", 0.0, 0.0, total_power_mw=5000.0))
    clock.t += 1.0
    meter.add_frames(10)
    meter.add_reading(Reading("x", 0.0, 0.0, total_power_mw=6000.0))
    clock.t += 1.0
    meter.add_frames(10)
    w = meter.window()
    assert w.frames == 20 and w.seconds == pytest.approx(2.0) and w.fps == pytest.approx(10.0)
    assert w.energy_mj == pytest.approx(11000.0)
    assert w.average_power_mw == pytest.approx(5500.0)
    assert w.mj_per_frame == pytest.approx(550.0)
    assert w.fps_per_w == pytest.approx(10 / 5.5)
    # next window: power unknown (a reader without a total rail) -> no energy figures
    meter.add_reading(Reading("x", 0.0, 0.0, total_power_mw=None))
    clock.t += 2.0
    meter.add_frames(5)
    w = meter.window()
    assert w.frames == 5 and w.energy_mj is None and w.mj_per_frame is None and w.fps_per_w is None


def test_readings_reach_a_real_mqtt_subscriber(mosquitto: Mosquitto) -> None:
    """Every recorded device's reading, as the app would publish it, arrives intact over the broker."""
    topic = f"edgedet/test-{uuid.uuid4().hex[:8]}/telemetry"
    got: queue.Queue[Dict[str, Any]] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: Any, _rc: Any, _p: Any = None) -> None:
        subscribed.put(True)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.put(json.loads(msg.payload.decode("utf-8")))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="telemetry-sub")
    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="telemetry-pub")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        assert subscribed.get(timeout=10)
        sent: List[Dict[str, Any]] = []
        for _device, _jp, line in ROWS:
            payload = reading_from_tegrastats(parse_tegrastats(line)).to_payload()
            sent.append(payload)
            info = pub.publish(topic, json.dumps(payload), qos=1)
            info.wait_for_publish(timeout=10)
        received = [got.get(timeout=10) for _ in sent]
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
    assert received == sent
    thor = received[-1]
    assert thor["temperatures_c"]["tj"] == 34.5 and thor["total_power_mw"] == 8291.0
