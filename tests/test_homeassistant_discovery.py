"""Home Assistant discovery messages: valid against the documented schema, stable ids, removals."""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

import pytest

from edgedet.publish.homeassistant import (
    Announced,
    HomeAssistantConfig,
    Topics,
    discovery_messages,
    entities,
    removal_messages,
)
from tests.support.ha_schema import check_device, check_entity, expand, parse_device_discovery

TOPICS = Topics(
    status="edgedet/dev-1/status",
    stats="edgedet/dev-1/stats",
    telemetry="edgedet/dev-1/telemetry",
    presence="edgedet/dev-1/{camera}/presence",
    zones={("front", "porch"): "edgedet/dev-1/front/zones/porch"},
    lines={("front", "gate"): "edgedet/dev-1/front/lines/gate"},
)


def build(
    cameras: Tuple[str, ...] = ("front", "yard"),
    classes: Tuple[str, ...] = ("person", "car"),
    discovery: str = "device",
    previous: object = None,
    telemetry: bool = True,
) -> Tuple[List, Announced]:
    cfg = HomeAssistantConfig(enabled=True, discovery=discovery, classes=list(classes))  # type: ignore[arg-type]
    items = entities(cameras, cfg.classes, TOPICS, telemetry)
    return discovery_messages(cfg, "dev-1", TOPICS, items, previous)  # type: ignore[arg-type]


def test_device_discovery_follows_the_documented_schema() -> None:
    messages, _ = build()
    assert [m.topic for m in messages] == ["homeassistant/device/edgedet_dev_1/config"]
    shared, comps = parse_device_discovery(messages[0].payload)
    assert check_device(shared["device"]) == []
    assert shared["origin"]["name"] == "edgedet"
    assert shared["availability_topic"] == TOPICS.status
    problems = [p for comp in comps.values() for p in check_entity(comp.pop("platform"), comp)]
    assert problems == []


def test_device_discovery_has_every_promised_entity() -> None:
    messages, _ = build()
    _, comps = parse_device_discovery(messages[0].payload)
    kinds = {cid: (c["platform"], c.get("device_class")) for cid, c in comps.items()}
    for cam in ("front", "yard"):
        assert kinds[f"{cam}_connected"] == ("binary_sensor", "connectivity")
        assert kinds[f"{cam}_fps"][0] == "sensor"
        for cls in ("person", "car"):
            assert kinds[f"{cam}_{cls}_occupancy"] == ("binary_sensor", "occupancy")
            assert kinds[f"{cam}_{cls}_count"][0] == "sensor"
    assert kinds["temperature"] == ("sensor", "temperature")
    assert kinds["power"] == ("sensor", "power")
    assert kinds["inference_time"] == ("sensor", "duration")
    assert kinds["outbox_depth"][0] == "sensor"


def test_unique_ids_are_unique_and_stable() -> None:
    first, _ = build()
    again, _ = build()
    assert first[0].payload == again[0].payload  # same config -> byte-identical retained message
    _, comps = parse_device_discovery(first[0].payload)
    ids = [c["unique_id"] for c in comps.values()]
    assert len(ids) == len(set(ids)) == 4 + 2 * (2 + 2 * 2)
    assert all(i.startswith("edgedet_dev_1_") for i in ids)


def test_component_discovery_follows_the_documented_schema() -> None:
    messages, _ = build(discovery="component")
    seen_ids = set()
    for msg in messages:
        prefix, platform, node, object_id, last = msg.topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "edgedet_dev_1", "config")
        config = expand(json.loads(msg.payload))
        assert check_entity(platform, config) == []
        assert check_device(config["device"]) == []
        assert config["availability_topic"] == TOPICS.status
        assert config["unique_id"] == f"edgedet_dev_1_{object_id}"
        seen_ids.add(config["unique_id"])
    assert len(seen_ids) == len(messages) == 16


def test_a_removed_camera_leaves_only_its_platform_in_the_device_message() -> None:
    _, before = build(cameras=("front", "yard"))
    messages, after = build(cameras=("front",), previous=before)
    comps = json.loads(messages[0].payload)["cmps"]
    removed = {cid: c for cid, c in comps.items() if cid.startswith("yard_")}
    assert removed and all(c == {"p": c["p"]} for c in removed.values())
    assert all("uniq_id" in c for cid, c in comps.items() if cid.startswith("front_"))
    assert not any(o.startswith("yard_") for o, _ in after.platforms)


def test_a_removed_camera_gets_empty_retained_configs_in_component_mode() -> None:
    _, before = build(cameras=("front", "yard"), discovery="component")
    messages, _ = build(cameras=("front",), discovery="component", previous=before)
    empty = sorted(m.topic for m in messages if m.payload == b"")
    assert empty == sorted(
        f"homeassistant/{p}/edgedet_dev_1/yard_{o}/config"
        for p, o in [
            ("binary_sensor", "connected"),
            ("sensor", "fps"),
            ("binary_sensor", "person_occupancy"),
            ("sensor", "person_count"),
            ("binary_sensor", "car_occupancy"),
            ("sensor", "car_count"),
        ]
    )
    assert all(m.retain for m in messages)


def test_switching_layout_removes_the_old_announcement() -> None:
    _, before = build(discovery="component")
    messages, _ = build(discovery="device", previous=before)
    cleared = [m.topic for m in messages if m.payload == b""]
    assert len(cleared) == 16 and all(t.count("/") == 4 for t in cleared)
    assert removal_messages(build()[1])[0].topic == "homeassistant/device/edgedet_dev_1/config"


def test_announcement_record_round_trips_and_rejects_garbage() -> None:
    _, announced = build()
    assert Announced.from_json(announced.to_json()) == announced
    assert Announced.from_json("not json") is None
    assert Announced.from_json('{"discovery": "device"}') is None


def test_without_telemetry_there_are_no_temperature_or_power_entities() -> None:
    messages, _ = build(telemetry=False)
    comps: Dict[str, dict] = json.loads(messages[0].payload)["cmps"]
    assert "temperature" not in comps and "power" not in comps


@pytest.mark.parametrize("prefix", ["", "/ha", "ha/#", "ha/"])
def test_bad_discovery_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        HomeAssistantConfig(discovery_prefix=prefix)


def test_zones_and_lines_get_occupancy_and_in_out_entities() -> None:
    cfg = HomeAssistantConfig(enabled=True, classes=["person"])
    items = entities(("front", "yard"), cfg.classes, TOPICS, False, {"front": ["porch"]}, {"front": ["gate"]})
    messages, _ = discovery_messages(cfg, "dev-1", TOPICS, items)
    _, comps = parse_device_discovery(messages[0].payload)
    assert [check_entity(c.pop("platform"), c) for c in dict(comps).values()] == [[]] * len(comps)
    assert comps["front_zone_porch_occupancy"]["state_topic"] == "edgedet/dev-1/front/zones/porch"
    assert comps["front_zone_porch_occupancy"]["device_class"] == "occupancy"
    assert comps["front_zone_porch_count"]["value_template"] == "{{ value_json.total }}"
    assert comps["front_line_gate_in"]["state_class"] == "total_increasing"
    assert comps["front_line_gate_out"]["value_template"] == "{{ value_json.total_out }}"
    assert not any(cid.startswith("yard_zone") or cid.startswith("yard_line") for cid in comps)
