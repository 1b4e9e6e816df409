"""Home Assistant discovery end to end: the real daemon on the demo clip, a real mosquitto, and every
entity's value template rendered (Jinja, as Home Assistant does) on what edgedet really publishes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from edgedet.config import load_config
from edgedet.service.daemon import Daemon
from tests.support.broker import Mosquitto
from tests.support.daemon_harness import RunningDaemon, daemon_config
from tests.support.ha_schema import check_device, check_entity, parse_device_discovery
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

FAKE_TEGRASTATS = Path(__file__).resolve().parent / "support" / "fake_tegrastats"
DISCOVERY = "homeassistant/device/edgedet_test_dev/config"


class Recorder:
    """A real MQTT client subscribed to everything (discovery and edgedet's topics)."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt

        self.messages: List[Tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-test")
        subscribed = threading.Event()
        self._client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload)))

    def latest(self, topic: str, since: float = 0.0) -> Optional[bytes]:
        with self._lock:
            found = [p for t, tp, p in self.messages if tp == topic and t > since]
        return found[-1] if found else None

    def all_on(self, topic: str) -> List[bytes]:
        with self._lock:
            return [p for _, tp, p in self.messages if tp == topic]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def render(template: str, payload: bytes) -> str:
    """Home Assistant renders value templates with Jinja in a sandbox, ``value_json`` being the JSON."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    return env.from_string(template).render(value_json=json.loads(payload), value=payload.decode())


def valid_state(platform: str, rendered: str) -> bool:
    if platform == "binary_sensor":
        return rendered in ("ON", "OFF")
    try:
        float(rendered)
    except ValueError:
        return False
    return True


@pytest.fixture
def recorder(mosquitto: Mosquitto) -> Iterator[Recorder]:
    rec = Recorder(mosquitto)
    yield rec
    rec.close()


def ha_config(tmp_path: Path, broker: Mosquitto, cameras: Tuple[str, ...]) -> Dict[str, Any]:
    return daemon_config(
        tmp_path,
        broker,
        cameras=cameras,
        telemetry={"type": "tegrastats", "tegrastats_path": str(FAKE_TEGRASTATS), "interval_s": 0.5},
        homeassistant={"enabled": True, "classes": ["person", "car"]},
        tracking={  # the whole frame as a zone, and a line across the middle of the street
            "cameras": {
                "front": {
                    "zones": [{"name": "street", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
                    "lines": [{"name": "middle", "points": [[0, 0.5], [1, 0.5]]}],
                }
            }
        },
        http={"enabled": False},
    )


def test_discovery_entities_read_what_the_daemon_publishes(
    tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TEGRASTATS_COUNT", "0")  # print recorded lines for ever
    monkeypatch.setenv("FAKE_TEGRASTATS_DEVICE", "Orin")
    daemon = RunningDaemon(tmp_path, mosquitto, ha_config(tmp_path, mosquitto, ("front", "yard")))
    try:
        daemon.wait_ready()
        payload = wait_for(lambda: recorder.latest(DISCOVERY), 30, "the discovery config")
        shared, comps = parse_device_discovery(payload)
        assert check_device(shared["device"]) == []
        problems = []
        for c in comps.values():
            problems += check_entity(c["platform"], {k: v for k, v in c.items() if k != "platform"})
        assert problems == []
        ids = [c["unique_id"] for c in comps.values()]
        assert len(ids) == len(set(ids)) == 4 + 2 * (2 + 2 * 2) + 2 + 2  # device, cameras, zone, line

        # availability: the retained status topic the device points at says online
        assert wait_for(lambda: recorder.latest(shared["availability_topic"]), 10, "status") == b"online"

        # every entity's state topic is published, and its template renders a valid state from it
        pending = dict(comps)

        def all_rendered() -> bool:
            for cid, c in list(pending.items()):
                payload = recorder.latest(c["state_topic"])
                if payload is not None and valid_state(c["platform"], render(c["value_template"], payload)):
                    del pending[cid]
            return not pending

        try:
            wait_for(all_rendered, 60, "valid states for every entity")
        except AssertionError:
            raise AssertionError(f"no valid state within 60 s for {sorted(pending)}") from None

        # the demo clip is a street with people: the front camera's person occupancy turns on
        occ = comps["front_person_occupancy"]
        wait_for(
            lambda: (
                render(occ["value_template"], recorder.latest(occ["state_topic"]) or b'{"classes": {}}')
                == "ON"
            ),
            60,
            "person occupancy ON",
        )
        count = comps["front_person_count"]
        assert int(render(count["value_template"], recorder.latest(count["state_topic"]) or b"")) >= 1

        # a broker restarted without persistence forgot the retained config: it is announced again
        mosquitto.restart()
        restarted = time.monotonic()
        wait_for(
            lambda: recorder.latest(DISCOVERY, since=restarted), 60, "discovery after the broker restart"
        )

        # a reload without the yard camera removes its entities (platform-only components)
        before = time.monotonic()
        config = ha_config(tmp_path, mosquitto, ("front",))
        daemon.write(config)
        daemon.proc.send_signal(signal.SIGHUP)
        payload = wait_for(lambda: recorder.latest(DISCOVERY, since=before), 60, "discovery after the reload")
        cmps = json.loads(payload)["cmps"]
        yard = {k: v for k, v in cmps.items() if k.startswith("yard_")}
        assert len(yard) == 6 and all(list(v) == ["p"] for v in yard.values())
        assert all("uniq_id" in v for k, v in cmps.items() if not k.startswith("yard_"))
        yard_state = comps["yard_person_count"]["state_topic"]
        wait_for(lambda: recorder.latest(yard_state, since=before) == b"", 30, "the yard occupancy cleared")

        # turning discovery off removes the device: an empty retained config
        before = time.monotonic()
        config["homeassistant"] = {"enabled": False}
        daemon.write(config)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: recorder.latest(DISCOVERY, since=before) == b"", 60, "the empty discovery config")
    finally:
        daemon.stop()
    assert not os.path.exists(tmp_path / "state" / "homeassistant.json")  # nothing left to remove


def test_no_temperature_or_power_entities_when_no_telemetry_source_runs(
    tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder
) -> None:
    config = ha_config(tmp_path, mosquitto, ("front",))
    config["telemetry"] = {"type": "tegrastats", "tegrastats_path": str(tmp_path / "no-tegrastats")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    daemon = Daemon(load_config(tmp_path / "c.yaml"))
    daemon.start()  # telemetry cannot start: logged, and the daemon runs without it
    try:
        assert daemon.telemetry is None
        payload = wait_for(lambda: recorder.latest(DISCOVERY), 30, "the discovery config")
        cmps = json.loads(payload)["cmps"]
        assert "temperature" not in cmps and "power" not in cmps
        assert {"inference_time", "outbox_depth", "front_connected"} <= set(cmps)
    finally:
        daemon.stop()
