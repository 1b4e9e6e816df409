"""Line counters kept across restarts: a small JSON file in state_dir, replaced atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List

from edgedet.runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# camera -> line -> label -> [in, out]
Totals = Dict[str, Dict[str, Dict[str, List[int]]]]


def parse_totals(text: str) -> Totals:
    """The file's content; anything malformed is skipped (a counter is never worth a crash)."""
    data = json.loads(text)
    out: Totals = {}
    if not isinstance(data, dict):
        return out
    for camera, lines in data.get("lines", {}).items():
        if not isinstance(lines, dict):
            continue
        for line, labels in lines.items():
            if not isinstance(labels, dict):
                continue
            for label, pair in labels.items():
                if (
                    isinstance(pair, dict)
                    and isinstance(pair.get("in"), int)
                    and isinstance(pair.get("out"), int)
                ):
                    out.setdefault(camera, {}).setdefault(line, {})[label] = [pair["in"], pair["out"]]
    return out


def format_totals(totals: Totals) -> str:
    lines = {
        camera: {
            line: {label: {"in": p[0], "out": p[1]} for label, p in labels.items()}
            for line, labels in per.items()
        }
        for camera, per in totals.items()
    }
    return json.dumps({"version": 1, "lines": lines}, indent=1, sort_keys=True)


class CounterStore:
    """Loads once, saves on every change (crossings are rare); write errors are logged, not raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warn = RateLimitedLog(log, interval_s=60.0)

    def load(self) -> Totals:
        try:
            return parse_totals(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("line counters: cannot read %s (%s); counting from zero", self.path, exc)
            return {}

    def save(self, totals: Totals) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(format_totals(totals))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            self._warn.warning("save", "line counters: cannot write %s: %s", self.path, exc)
