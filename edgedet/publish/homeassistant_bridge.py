"""Sends Home Assistant discovery (homeassistant.py builds it) and keeps the per-camera presence state.

``announce()`` publishes the retained discovery config and records what it announced in the state
directory, so that entities of a camera removed by a reload (or while the daemon was down) are removed
from Home Assistant at the next announcement. ``observe(result)`` runs for every detection result (on the
post-processing thread); the occupancy of a class follows edgedet's presence rule (seen in K of the last
N frames, cleared after T s without it: ``mqtt.events``), and its count is the number of objects in the
latest frame. The retained presence state is published at once when a class appears or clears, and
at most once a second when only a count changes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from edgedet.publish.homeassistant import (
    Announced,
    HomeAssistantConfig,
    Topics,
    discovery_messages,
    entities,
    presence_payload,
    removal_messages,
)
from edgedet.publish.mqtt import MqttPublisher
from edgedet.tracking.config import PresenceConfig
from edgedet.tracking.presence import PresenceTracker
from edgedet.types import DetectionResult

log = logging.getLogger(__name__)

COUNT_INTERVAL_S = 1.0  # a count that only flickers is published at most this often per camera
RECORD_NAME = "homeassistant.json"
Names = Mapping[str, Sequence[str]]  # camera -> zone (or line) names


def ha_topics(publisher: MqttPublisher, zones: Names, lines: Names) -> Topics:
    """The topics the entities read, as this publisher names them (zone and line names topic-safe)."""
    msgs = publisher.cfg.messages
    return Topics(
        status=publisher.status_topic,
        stats=publisher.topic(msgs.stats),
        telemetry=publisher.topic(msgs.telemetry),
        presence=f"{publisher.base_topic}/{{camera}}/presence",
        zones={
            (c, z): publisher.topic(msgs.occupancy, c, zone=z) for c, names in zones.items() for z in names
        },
        lines={
            (c, ln): publisher.topic(msgs.lines, c, line=ln) for c, names in lines.items() for ln in names
        },
    )


def _previous(path: Path) -> Optional[Announced]:
    try:
        return Announced.from_json(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def _remember(path: Path, announced: Optional[Announced]) -> None:
    try:
        if announced is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(announced.to_json(), encoding="utf-8")
            tmp.replace(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("Home Assistant: cannot record announced entities in %s: %s", path, exc)


def withdraw(publisher: MqttPublisher, state_dir: Path) -> None:
    """Remove every entity announced before (discovery turned off in the config)."""
    path = Path(state_dir) / RECORD_NAME
    previous = _previous(path)
    if previous is None:
        return
    for msg in removal_messages(previous):
        publisher.publish_retained(msg.topic, msg.payload)
    _remember(path, None)
    log.info(
        "Home Assistant: discovery turned off; removed the %d entities announced before",
        len(previous.platforms),
    )


class _CameraState:
    def __init__(self, classes: Sequence[str]) -> None:
        self.counts: Dict[str, int] = dict.fromkeys(classes, 0)
        self.published: Optional[Dict[str, int]] = None
        self.last_publish = 0.0


class HomeAssistantBridge:
    def __init__(
        self,
        cfg: HomeAssistantConfig,
        events: PresenceConfig,
        publisher: MqttPublisher,
        cameras: Sequence[str],
        telemetry: bool,
        state_dir: Path,
        zones: Optional[Names] = None,
        lines: Optional[Names] = None,
    ) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.zones = dict(zones or {})
        self.lines = dict(lines or {})
        self.topics = ha_topics(publisher, self.zones, self.lines)
        self.cameras = list(cameras)
        self.telemetry = telemetry
        self.record_path = Path(state_dir) / RECORD_NAME
        self._presence = PresenceTracker(events.model_copy(update={"classes": list(cfg.classes)}))
        self._state = {c: _CameraState(cfg.classes) for c in self.cameras}
        self._lock = threading.Lock()

    # -- discovery -----------------------------------------------------------------------------
    def announce(self) -> int:
        """Publish the discovery config (retained) and the current presence; returns the messages sent."""
        items = entities(self.cameras, self.cfg.classes, self.topics, self.telemetry, self.zones, self.lines)
        messages, announced = discovery_messages(
            self.cfg, self.publisher.device_id, self.topics, items, _previous(self.record_path)
        )
        sent = sum(1 for msg in messages if self.publisher.publish_retained(msg.topic, msg.payload))
        _remember(self.record_path, announced)
        for camera in self.cameras:
            self._publish_presence(camera, force=True)
        log.info(
            "Home Assistant: announced %d entities (%s discovery under %s/)",
            len(items),
            self.cfg.discovery,
            self.cfg.discovery_prefix,
        )
        return sent

    # -- presence state -------------------------------------------------------------------------
    def observe(self, result: DetectionResult) -> None:
        state = self._state.get(result.camera)
        if state is None:
            return
        self._presence.update(result)
        present = set(self._presence.present(result.camera))
        frame: Dict[str, int] = {}
        for det in result.detections:
            frame[det.class_name] = frame.get(det.class_name, 0) + 1
        with self._lock:
            for cls in state.counts:
                state.counts[cls] = frame.get(cls, 0) if cls in present else 0
        self._publish_presence(result.camera)

    def tick(self, now: Optional[float] = None) -> None:
        """From the supervisor: clears classes of cameras that stopped delivering frames, and sends
        counts held back by the rate limit."""
        t = time.time() if now is None else now
        self._presence.expire(t)
        for camera, state in self._state.items():
            present = set(self._presence.present(camera))
            with self._lock:
                for cls in state.counts:
                    if cls not in present:
                        state.counts[cls] = 0
            self._publish_presence(camera)

    def clear_presence(self, cameras: Sequence[str]) -> None:
        """Empty the retained presence state of cameras that are gone."""
        for camera in cameras:
            self.publisher.publish_retained(self.topics.presence_of(camera), b"")

    def _publish_presence(self, camera: str, force: bool = False) -> None:
        state = self._state[camera]
        now = time.monotonic()
        with self._lock:
            counts = dict(state.counts)
            last = state.published
            if not force and counts == last:
                return
            occupancy_changed = last is None or {k for k, v in counts.items() if v} != {
                k for k, v in last.items() if v
            }
            if not force and not occupancy_changed and now - state.last_publish < COUNT_INTERVAL_S:
                return
            state.published, state.last_publish = counts, now
        self.publisher.publish_retained(
            self.topics.presence_of(camera), presence_payload(camera, counts, time.time())
        )
