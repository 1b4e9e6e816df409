"""The JSON Schemas of the message contract (edgedet/schema/*.schema.json, shipped as package data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from edgedet.errors import require

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
# message "type" field -> schema file stem
KINDS = {
    "detections": "detections",
    "event": "event",
    "object": "object",
    "occupancy": "occupancy",
    "line_count": "line_count",
    "stats": "stats",
    "telemetry": "telemetry",
}


def load_schema(name: str) -> Dict[str, Any]:
    """A schema by file stem: detections, event, object, occupancy, line_count, stats, telemetry, status."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    with open(path, encoding="utf-8") as f:
        data: Dict[str, Any] = json.load(f)
    return data


class MessageValidator:
    """Validates decoded messages against their schema, picked by the message's ``type``."""

    def __init__(self) -> None:
        jsonschema: Any = require("jsonschema", "test", "validating messages against the JSON Schemas")
        self._validators = {
            kind: jsonschema.Draft202012Validator(load_schema(stem)) for kind, stem in KINDS.items()
        }
        self._status = jsonschema.Draft202012Validator(load_schema("status"))

    def errors(self, msg: Any) -> List[str]:
        """Problems with one message ([] when valid); a str is checked as a status payload."""
        if isinstance(msg, str):
            v = self._status
        elif isinstance(msg, dict) and msg.get("type") in self._validators:
            v = self._validators[msg["type"]]
        else:
            return [f"not an edgedet message (type={msg.get('type') if isinstance(msg, dict) else None!r})"]
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in v.iter_errors(msg)
        ]


__all__ = ["KINDS", "SCHEMA_DIR", "MessageValidator", "load_schema"]
