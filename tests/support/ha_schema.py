"""Home Assistant's documented MQTT discovery schema, as far as edgedet's entities use it.

Written from the Home Assistant documentation (integrations/mqtt: "Discovery messages", "Device
discovery payload", the abbreviation lists, and the binary_sensor/sensor platform pages), so that tests
check what edgedet announces against what Home Assistant reads, not against edgedet's own builder.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Tuple

# entity config abbreviations (homeassistant/components/mqtt/abbreviations.py: ABBREVIATIONS)
ABBREVIATIONS = {
    "avty_t": "availability_topic",
    "avty_mode": "availability_mode",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "ent_cat": "entity_category",
    "exp_aft": "expire_after",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "o": "origin",
    "p": "platform",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "qos": "qos",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
# device and origin abbreviations (DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS)
DEVICE_ABBREVIATIONS = {
    "cns": "connections",
    "ids": "identifiers",
    "mf": "manufacturer",
    "mdl": "model",
    "mdl_id": "model_id",
    "hw": "hw_version",
    "sw": "sw_version",
    "sa": "suggested_area",
    "sn": "serial_number",
}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}

COMMON_KEYS = {
    "availability_topic",
    "availability_mode",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "entity_category",
    "expire_after",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "name",
    "qos",
    "unique_id",
    "value_template",
    "state_topic",
    "platform",
    "enabled_by_default",
    "force_update",
}
PLATFORM_KEYS = {
    "binary_sensor": COMMON_KEYS | {"device_class", "payload_on", "payload_off", "off_delay"},
    "sensor": COMMON_KEYS
    | {
        "device_class",
        "state_class",
        "unit_of_measurement",
        "suggested_display_precision",
        "last_reset_value_template",
    },
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}}
DEVICE_CLASSES = {
    "binary_sensor": {"connectivity", "occupancy", "motion", "presence", "problem", "running"},
    "sensor": {"temperature", "power", "duration", "energy", "voltage", "current", "frequency"},
}
# units Home Assistant accepts for a sensor device class
UNITS = {
    "temperature": {"°C", "°F", "K"},
    "power": {"W", "kW", "mW"},
    "duration": {"ms", "s", "min", "h", "d"},
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}


def expand(config: Mapping[str, Any]) -> Dict[str, Any]:
    """An entity config with every abbreviation replaced by its full key (as Home Assistant does)."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        full = ABBREVIATIONS.get(key, key)
        if full in out:
            raise AssertionError(f"{key!r} given twice (abbreviated and in full)")
        if full == "device":
            value = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in value.items()}
        elif full == "origin":
            value = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in value.items()}
        out[full] = value
    return out


def check_entity(platform: str, config: Mapping[str, Any]) -> List[str]:
    """Problems with one expanded entity config (empty when Home Assistant would accept it)."""
    problems = []
    where = config.get("unique_id", "?")
    allowed = PLATFORM_KEYS.get(platform)
    if allowed is None:
        return [f"{where}: unknown platform {platform!r}"]
    for key in config:
        if key not in allowed:
            problems.append(f"{where}: key {key!r} is not a {platform} option")
    for key in REQUIRED[platform] | {"unique_id"}:
        if not config.get(key):
            problems.append(f"{where}: required {key!r} is missing")
    dc = config.get("device_class")
    if dc is not None and dc not in DEVICE_CLASSES[platform]:
        problems.append(f"{where}: device_class {dc!r} is not a {platform} device class")
    if dc in UNITS and config.get("unit_of_measurement") not in UNITS[dc]:
        problems.append(f"{where}: unit {config.get('unit_of_measurement')!r} not valid for {dc}")
    sc = config.get("state_class")
    if sc is not None and sc not in STATE_CLASSES:
        problems.append(f"{where}: state_class {sc!r}")
    ec = config.get("entity_category")
    if ec is not None and ec not in ENTITY_CATEGORIES:
        problems.append(f"{where}: entity_category {ec!r}")
    return problems


def check_device(device: Mapping[str, Any]) -> List[str]:
    problems = []
    if not device.get("identifiers") and not device.get("connections"):
        problems.append("device needs identifiers or connections")
    if not device.get("name"):
        problems.append("device needs a name")
    return problems


def parse_device_discovery(payload: bytes) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(shared options, {component id: expanded entity config with shared options applied})."""
    data = expand(json.loads(payload))
    components = data.pop("components")
    shared = {k: v for k, v in data.items() if k not in ("device", "origin")}
    out = {}
    for cid, comp in components.items():
        entity = expand(comp)
        for key, value in shared.items():
            entity.setdefault(key, value)
        entity["device"], entity["origin"] = data["device"], data["origin"]
        out[cid] = entity
    return data, out
