"""Home Assistant MQTT discovery: the retained config messages that make edgedet appear as a device.

Pure: builds topics and payloads from the config (no I/O, no clock); ``homeassistant_bridge.py`` sends them.

One device per edgedet (``device_id``), available while edgedet's retained status topic says
``online``. Its entities read topics edgedet already publishes, through value templates:
- the stats message: per camera a connectivity binary sensor and a frames/s sensor, the inference time,
  the outbox depth;
- the telemetry message: the hottest temperature and the total input power;
- the per-camera presence state (``<prefix>/<device>/<camera>/presence``, retained, built by
  ``presence_payload``): per camera and class an occupancy binary sensor and a count sensor;
- the tracking stage's retained zone occupancy and line count messages: per zone an occupancy binary
  sensor and a count sensor, per line an ``in`` and an ``out`` counter.

Two discovery layouts: ``device`` (one message ``<discovery_prefix>/device/<node>/config`` listing every
entity under ``cmps``; Home Assistant 2024.11 and later) and ``component`` (one message per entity at
``<discovery_prefix>/<platform>/<node>/<object_id>/config``; every version). Keys use Home Assistant's
documented abbreviations. Unique ids are ``<node>_<object_id>``: they depend only on the device id,
camera and class names, so an entity keeps its history and settings across restarts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pydantic import Field
from typing_extensions import Literal

from edgedet import __version__
from edgedet.configbase import Strict

BINARY_SENSOR = "binary_sensor"
SENSOR = "sensor"


class HomeAssistantConfig(Strict):
    """Home Assistant MQTT discovery (opt-in)."""

    enabled: bool = False
    # Home Assistant's discovery prefix (its MQTT integration setting; "homeassistant" by default)
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[^#+/$][^#+]*[^#+/]$|^[^#+/$]$")
    # device: one message for the whole device (Home Assistant 2024.11+); component: one per entity
    discovery: Literal["device", "component"] = "device"
    # classes that get an occupancy binary sensor and a count sensor on every camera
    classes: List[str] = Field(default_factory=lambda: ["person"], max_length=80)
    # the device's name in Home Assistant (default: "edgedet <device_id>")
    device_name: Optional[str] = Field(default=None, min_length=1)


@dataclass(frozen=True)
class Topics:
    """edgedet's own topics that entities read (absolute)."""

    status: str  # retained online/offline: the device's availability
    stats: str
    telemetry: str
    presence: str  # with "{camera}"
    zones: Mapping[Tuple[str, str], str] = field(default_factory=dict)  # (camera, zone) -> occupancy topic
    lines: Mapping[Tuple[str, str], str] = field(default_factory=dict)  # (camera, line) -> line count topic

    def presence_of(self, camera: str) -> str:
        return self.presence.replace("{camera}", camera)


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity, in the (abbreviated) keys of its discovery config."""

    object_id: str  # unique within the device; part of the unique id and of the component topic
    platform: str  # binary_sensor or sensor
    config: Mapping[str, Any]  # name, stat_t, val_tpl, dev_cla ... (without p, uniq_id, dev, o)


@dataclass(frozen=True)
class DiscoveryMessage:
    topic: str
    payload: bytes  # b"" removes what a retained config created

    @property
    def retain(self) -> bool:
        return True


def node_id(device_id: str) -> str:
    return f"edgedet_{device_id}".replace(".", "_").replace("-", "_").lower()


def _key(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "x"


def _q(text: str) -> str:
    """A Jinja string literal (JSON quoting is valid Jinja)."""
    return json.dumps(text)


def camera_entities(camera: str, classes: Sequence[str], topics: Topics) -> List[Entity]:
    """Connectivity and frames/s from stats; occupancy and count per class from the occupancy topic."""
    cam = _q(camera)
    cam_key = _key(camera)
    out = [
        Entity(
            f"{cam_key}_connected",
            BINARY_SENSOR,
            {
                "name": f"{camera} camera",
                "dev_cla": "connectivity",
                "stat_t": topics.stats,
                "val_tpl": (
                    f"{{{{ 'ON' if value_json.cameras.get({cam}, {{}}).get('state') == 'streaming' "
                    "else 'OFF' }}"
                ),
                "ent_cat": "diagnostic",
            },
        ),
        Entity(
            f"{cam_key}_fps",
            SENSOR,
            {
                "name": f"{camera} frame rate",
                "stat_t": topics.stats,
                "val_tpl": f"{{{{ value_json.cameras.get({cam}, {{}}).get('fps') }}}}",
                "unit_of_meas": "fps",
                "stat_cla": "measurement",
                "sug_dsp_prc": 1,
                "ic": "mdi:cctv",
            },
        ),
    ]
    occupancy = topics.presence_of(camera)
    for cls in classes:
        c, key = _q(cls), f"{cam_key}_{_key(cls)}"
        out.append(
            Entity(
                f"{key}_occupancy",
                BINARY_SENSOR,
                {
                    "name": f"{camera} {cls} occupancy",
                    "dev_cla": "occupancy",
                    "stat_t": occupancy,
                    "val_tpl": f"{{{{ 'ON' if value_json.classes.get({c}, 0) > 0 else 'OFF' }}}}",
                },
            )
        )
        out.append(
            Entity(
                f"{key}_count",
                SENSOR,
                {
                    "name": f"{camera} {cls} count",
                    "stat_t": occupancy,
                    "val_tpl": f"{{{{ value_json.classes.get({c}, 0) }}}}",
                    "stat_cla": "measurement",
                    "ic": "mdi:account-group" if cls == "person" else "mdi:counter",
                },
            )
        )
    return out


def device_entities(topics: Topics, telemetry: bool) -> List[Entity]:
    """Inference time and outbox depth (stats); temperature and power (telemetry, when it is on)."""
    out = [
        Entity(
            "inference_time",
            SENSOR,
            {
                "name": "inference time",
                "dev_cla": "duration",
                "unit_of_meas": "ms",
                "stat_t": topics.stats,
                "val_tpl": "{{ value_json.latency_ms.get('infer', {}).get('p50') }}",
                "stat_cla": "measurement",
                "sug_dsp_prc": 1,
                "ent_cat": "diagnostic",
            },
        ),
        Entity(
            "outbox_depth",
            SENSOR,
            {
                "name": "outbox depth",
                "stat_t": topics.stats,
                "val_tpl": "{{ value_json.mqtt.outbox_depth }}",
                "unit_of_meas": "messages",
                "stat_cla": "measurement",
                "ent_cat": "diagnostic",
                "ic": "mdi:tray-full",
            },
        ),
    ]
    if telemetry:
        out.append(
            Entity(
                "temperature",
                SENSOR,
                {
                    "name": "temperature",
                    "dev_cla": "temperature",
                    "unit_of_meas": "°C",
                    "stat_t": topics.telemetry,
                    "val_tpl": "{{ value_json.readings.temp_max_c }}",
                    "stat_cla": "measurement",
                    "sug_dsp_prc": 1,
                    "ent_cat": "diagnostic",
                },
            )
        )
        out.append(
            Entity(
                "power",
                SENSOR,
                {
                    "name": "power",
                    "dev_cla": "power",
                    "unit_of_meas": "W",
                    "stat_t": topics.telemetry,
                    "val_tpl": (
                        "{{ (value_json.readings.total_power_mw / 1000.0) | round(2) "
                        "if value_json.readings.total_power_mw is not none else None }}"
                    ),
                    "stat_cla": "measurement",
                    "sug_dsp_prc": 2,
                    "ent_cat": "diagnostic",
                },
            )
        )
    return out


def zone_entities(camera: str, zone: str, topic: str) -> List[Entity]:
    """A zone of the tracking stage: occupied or not, and how many objects are in it."""
    key = f"{_key(camera)}_zone_{_key(zone)}"
    return [
        Entity(
            f"{key}_occupancy",
            BINARY_SENSOR,
            {
                "name": f"{camera} {zone} occupancy",
                "dev_cla": "occupancy",
                "stat_t": topic,
                "val_tpl": "{{ 'ON' if value_json.total > 0 else 'OFF' }}",
            },
        ),
        Entity(
            f"{key}_count",
            SENSOR,
            {
                "name": f"{camera} {zone} count",
                "stat_t": topic,
                "val_tpl": "{{ value_json.total }}",
                "stat_cla": "measurement",
                "ic": "mdi:account-group",
            },
        ),
    ]


def line_entities(camera: str, line: str, topic: str) -> List[Entity]:
    """A counting line of the tracking stage: crossings in and out (totals kept across restarts)."""
    key = f"{_key(camera)}_line_{_key(line)}"
    return [
        Entity(
            f"{key}_{direction}",
            SENSOR,
            {
                "name": f"{camera} {line} {direction}",
                "stat_t": topic,
                "val_tpl": f"{{{{ value_json.total_{direction} }}}}",
                "stat_cla": "total_increasing",
                "ic": "mdi:arrow-right-bold" if direction == "in" else "mdi:arrow-left-bold",
            },
        )
        for direction in ("in", "out")
    ]


def entities(
    cameras: Sequence[str],
    classes: Sequence[str],
    topics: Topics,
    telemetry: bool,
    zones: Optional[Mapping[str, Sequence[str]]] = None,
    lines: Optional[Mapping[str, Sequence[str]]] = None,
) -> List[Entity]:
    """Every entity of the device, in a stable order; ``zones``/``lines``: names per camera."""
    out = device_entities(topics, telemetry)
    for camera in cameras:
        out.extend(camera_entities(camera, classes, topics))
        for zone in (zones or {}).get(camera, ()):
            out.extend(zone_entities(camera, zone, topics.zones[(camera, zone)]))
        for line in (lines or {}).get(camera, ()):
            out.extend(line_entities(camera, line, topics.lines[(camera, line)]))
    return out


def _device(device_id: str, name: Optional[str]) -> Dict[str, Any]:
    return {
        "ids": [node_id(device_id)],
        "name": name or f"edgedet {device_id}",
        "mf": "edgedet",
        "mdl": "edgedet object detector",
        "sw": __version__,
    }


ORIGIN = {"name": "edgedet", "sw": __version__}


def _component(entity: Entity, node: str) -> Dict[str, Any]:
    body: Dict[str, Any] = {"p": entity.platform, "uniq_id": f"{node}_{entity.object_id}"}
    body.update(entity.config)
    return body


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class Announced:
    """What a discovery run announced: enough to remove it later (kept in the state directory)."""

    discovery: str  # "device" or "component"
    prefix: str
    node: str
    platforms: Tuple[Tuple[str, str], ...]  # (object_id, platform)

    def to_json(self) -> str:
        return json.dumps(
            {
                "discovery": self.discovery,
                "prefix": self.prefix,
                "node": self.node,
                "platforms": [list(p) for p in self.platforms],
            }
        )

    @staticmethod
    def from_json(text: str) -> Optional[Announced]:
        """None when the text is not a record this module wrote (then nothing is removed)."""
        try:
            data = json.loads(text)
            return Announced(
                str(data["discovery"]),
                str(data["prefix"]),
                str(data["node"]),
                tuple((str(o), str(p)) for o, p in data["platforms"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def discovery_messages(
    cfg: HomeAssistantConfig,
    device_id: str,
    topics: Topics,
    items: Sequence[Entity],
    previous: Optional[Announced] = None,
) -> Tuple[List[DiscoveryMessage], Announced]:
    """The retained messages that announce ``items`` and remove what ``previous`` announced and is gone.

    Device layout: a removed entity stays in ``cmps`` as ``{"p": platform}`` only (Home Assistant's
    documented way to remove one component of a device); component layout: an empty retained payload on
    its config topic. A change of layout or prefix removes the old announcement completely.
    """
    node = node_id(device_id)
    current = Announced(
        cfg.discovery, cfg.discovery_prefix, node, tuple((e.object_id, e.platform) for e in items)
    )
    out: List[DiscoveryMessage] = []
    gone: Iterable[Tuple[str, str]] = ()
    if previous is not None:
        same_place = (previous.discovery, previous.prefix, previous.node) == (
            cfg.discovery,
            cfg.discovery_prefix,
            node,
        )
        if same_place:
            ids = {o for o, _ in current.platforms}
            gone = [(o, p) for o, p in previous.platforms if o not in ids]
        else:
            out.extend(removal_messages(previous))
    if cfg.discovery == "device":
        cmps: Dict[str, Any] = {e.object_id: _component(e, node) for e in items}
        for object_id, platform in gone:
            cmps[object_id] = {"p": platform}
        payload = {
            "dev": _device(device_id, cfg.device_name),
            "o": ORIGIN,
            "avty_t": topics.status,
            "cmps": cmps,
            "qos": 0,
        }
        out.append(DiscoveryMessage(f"{cfg.discovery_prefix}/device/{node}/config", _encode(payload)))
    else:
        for object_id, platform in gone:
            out.append(
                DiscoveryMessage(_component_topic(cfg.discovery_prefix, platform, node, object_id), b"")
            )
        for e in items:
            body = _component(e, node)
            platform = body.pop("p")
            body.update({"dev": _device(device_id, cfg.device_name), "o": ORIGIN, "avty_t": topics.status})
            topic = _component_topic(cfg.discovery_prefix, platform, node, e.object_id)
            out.append(DiscoveryMessage(topic, _encode(body)))
    return out, current


def removal_messages(previous: Announced) -> List[DiscoveryMessage]:
    """Empty retained payloads that remove everything ``previous`` announced."""
    if previous.discovery == "device":
        return [DiscoveryMessage(f"{previous.prefix}/device/{previous.node}/config", b"")]
    return [
        DiscoveryMessage(_component_topic(previous.prefix, p, previous.node, o), b"")
        for o, p in previous.platforms
    ]


def _component_topic(prefix: str, platform: str, node: str, object_id: str) -> str:
    return f"{prefix}/{platform}/{node}/{object_id}/config"


def presence_payload(camera: str, counts: Mapping[str, int], time_s: float) -> bytes:
    """The retained per-camera state the occupancy and count entities read: objects per class now."""
    body = {
        "camera": camera,
        "classes": {str(k): int(v) for k, v in sorted(counts.items())},
        "time": round(time_s, 3),
    }
    return _encode(body)
