"""The tracking stage: per camera, tracker -> objects -> zones and lines -> events and snapshots.

``Tracking.process(result)`` is called once per decoded frame (cameras in any order, each camera's frames
in order) from the post-processing thread; ``Tracking.expire(now)`` now and then from another thread
clears presence on cameras that stopped sending frames. Everything it decides comes back as one
TrackingUpdate for the publisher.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgedet.runtime.ratelimit import RateLimitedLog
from edgedet.tracking import draw, snapshots
from edgedet.tracking.bytetrack import ByteTracker
from edgedet.tracking.config import CameraZones, PresenceConfig, TrackingConfig
from edgedet.tracking.counters import CounterStore, Totals
from edgedet.tracking.geometry import bottom_centre
from edgedet.tracking.objects import BookStep, ObjectBook, TrackedObject
from edgedet.tracking.presence import PresenceTracker
from edgedet.tracking.values import (
    ACTIVE,
    END,
    ENTERED_ZONE,
    LEFT_ZONE,
    NEW,
    SNAPSHOT,
    STATIONARY,
    UPDATE,
    Box,
    LineCount,
    ObjectEvent,
    Occupancy,
    Snapshot,
    TrackingUpdate,
)
from edgedet.tracking.zones import LineCounter, Placed, ZoneTracker
from edgedet.types import DetectionResult

log = logging.getLogger(__name__)

_BETTER = 1.05  # a snapshot must be this much better than the last one to replace it


@dataclass
class _Picture:
    quality: float
    image: Optional[np.ndarray]  # rendered, not yet encoded; None once sent
    score: float
    box: Box
    time: float
    last_sent: Optional[float] = None
    sent_any: bool = False


class CameraStage:
    """Everything tracking keeps for one camera."""

    def __init__(
        self,
        camera: str,
        cfg: TrackingConfig,
        zones: CameraZones,
        run_id: str,
        totals: Dict[str, Dict[str, List[int]]],
        store: Optional[snapshots.SnapshotStore],
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.zone_cfg = zones
        self.tracker = ByteTracker(cfg.tracker)
        self.book = ObjectBook(camera, cfg.objects, run_id)
        self.totals = totals
        self.store = store
        self.frame_size: Optional[Tuple[int, int]] = None
        self.zones: Optional[ZoneTracker] = None
        self.lines: Optional[LineCounter] = None
        self.pictures: Dict[str, _Picture] = {}
        self.last_frame = 0.0  # capture time of the latest frame
        self._warn = RateLimitedLog(log, interval_s=60.0)

    def _geometry(self, size: Tuple[int, int], t: float) -> Tuple[ZoneTracker, LineCounter, List[LineCount]]:
        """Zones and lines scaled to the frame size (first frame, or the camera changed resolution);
        the line totals to send when they were (re)built."""
        if size == self.frame_size and self.zones is not None and self.lines is not None:
            return self.zones, self.lines, []
        if self.frame_size is not None:
            log.info("camera %s: frame size %dx%d, zones and lines rescaled", self.camera, *size)
        elif self.zone_cfg.frame_size is not None and tuple(self.zone_cfg.frame_size) != size:
            log.warning(
                "camera %s: zones and lines are given for %dx%d but frames are %dx%d; scaled",
                self.camera,
                *self.zone_cfg.frame_size,
                *size,
            )
        self.frame_size = size
        if self.lines is not None:
            self.totals = self.lines.totals()
        self.zones = ZoneTracker(self.camera, self.zone_cfg, size)
        self.lines = LineCounter(self.camera, self.zone_cfg, size, self.totals)
        return self.zones, self.lines, self.lines.current(t)

    def process(
        self, result: DetectionResult
    ) -> Tuple[DetectionResult, List[ObjectEvent], List[Occupancy], List[LineCount], List[Snapshot]]:
        t = result.capture_time
        self.last_frame = t
        size = (int(result.source_width), int(result.source_height))
        zones, lines, line_msgs = self._geometry(size, t)
        dets = result.detections
        boxes = np.array([(d.x1, d.y1, d.x2, d.y2) for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        classes = np.array([d.class_id for d in dets], dtype=np.int64)
        labels = {d.class_id: d.class_name for d in dets}
        step = self.tracker.update(boxes, scores, classes)
        book = self.book.update(step, labels, size, t)

        placed = [Placed(o.track_id, o.label, bottom_centre(o.box)) for o in book.alive]
        in_zones, occupancy = zones.update(placed, t)
        crossings = lines.update(placed, t)
        if crossings:
            self.totals = lines.totals()
        line_msgs.extend(crossings)

        reasons: Dict[int, List[str]] = {}
        for obj in book.alive:
            now_in = in_zones.get(obj.track_id, ())
            entered = [z for z in now_in if z not in obj.zones]
            left = [z for z in obj.zones if z not in now_in]
            for z in entered:
                if z not in obj.entered:
                    obj.entered.append(z)
            obj.zones = now_in
            r = reasons.setdefault(obj.track_id, [])
            if entered:
                r.append(ENTERED_ZONE)
            if left:
                r.append(LEFT_ZONE)
        for obj in book.became_stationary:
            reasons.setdefault(obj.track_id, []).append(STATIONARY)
        for obj in book.became_active:
            reasons.setdefault(obj.track_id, []).append(ACTIVE)

        shots = self._pictures(book, result)
        events: List[ObjectEvent] = []
        shot_ids = {s.track_id for s in shots}
        for obj in book.alive:
            if not obj.announced:
                if self._may_announce(obj):
                    obj.announced = True
                    shots.extend(self._send_picture(obj, t, force=True))
                    events.append(self._event(obj, NEW, (), result))
                continue
            r = reasons.get(obj.track_id, [])
            if obj.track_id in shot_ids:
                r.append(SNAPSHOT)
            if r:
                events.append(self._event(obj, UPDATE, tuple(r), result))
        for obj in book.ended:
            events.extend(self._end(obj, t, result, shots))
        for obj in book.dropped:
            self.pictures.pop(obj.object_id, None)

        tracked = tuple(
            dataclasses.replace(d, track_id=oid) if oid is not None else d
            for d, oid in zip(dets, book.det_object_ids)
        )
        out = dataclasses.replace(result, detections=tracked, image=None)
        return out, events, occupancy, line_msgs, shots

    def _may_announce(self, obj: TrackedObject) -> bool:
        required = self.zone_cfg.required_zones
        return not required or any(z in required for z in obj.entered)

    def _end(
        self, obj: TrackedObject, t: float, result: Optional[DetectionResult], shots: List[Snapshot]
    ) -> List[ObjectEvent]:
        out: List[ObjectEvent] = []
        if obj.announced:
            shots.extend(self._send_picture(obj, t, force=True))
            out.append(self._event(obj, END, (), result, end=True, decided=t))
        self.pictures.pop(obj.object_id, None)
        return out

    def end_all(self, now: float) -> Tuple[List[ObjectEvent], List[Occupancy], List[Snapshot]]:
        """The camera went silent: every object ends and every zone empties (``now``: wall clock)."""
        shots: List[Snapshot] = []
        events: List[ObjectEvent] = []
        for obj in self.book.end_all():
            events.extend(self._end(obj, now, None, shots))
        self.tracker.reset()
        self.pictures.clear()
        occupancy = self.zones.update([], now)[1] if self.zones is not None else []
        return events, occupancy, shots

    # -- snapshots -----------------------------------------------------------------------------
    def _pictures(self, book: BookStep, result: DetectionResult) -> List[Snapshot]:
        """Keep each object's best picture so far; send those of announced objects when due."""
        cfg = self.cfg.snapshots
        image = result.image
        if not cfg.enabled or image is None:
            return []
        t = result.capture_time
        w, h = int(result.source_width), int(result.source_height)
        for obj in book.matched:
            q = snapshots.quality(obj.box, obj.score, w, h, cfg.edge_margin_px)
            pic = self.pictures.get(obj.object_id)
            if pic is not None and q <= pic.quality * _BETTER:
                continue
            text = f"{obj.label} #{obj.track_id} {obj.score:.2f}"
            try:
                rendered = snapshots.render(image, obj.box, text, cfg, draw.color_for(obj.track_id))
            except Exception as exc:  # a drawing problem must not stop tracking
                self._warn.warning("render", "snapshot of %s not rendered: %s", obj.object_id, exc)
                continue
            if pic is None:
                self.pictures[obj.object_id] = _Picture(q, rendered, obj.score, obj.box, t)
            else:
                pic.quality, pic.image, pic.score, pic.box, pic.time = q, rendered, obj.score, obj.box, t
        out: List[Snapshot] = []
        for obj in book.alive:
            if obj.announced:
                out.extend(self._send_picture(obj, t, force=False))
        return out

    def _send_picture(self, obj: TrackedObject, t: float, force: bool) -> List[Snapshot]:
        cfg = self.cfg.snapshots
        pic = self.pictures.get(obj.object_id)
        if pic is None or pic.image is None:
            return []
        if not force and pic.last_sent is not None and t - pic.last_sent < cfg.min_interval_s:
            return []
        try:
            jpeg = snapshots.encode_jpeg(pic.image, cfg.jpeg_quality)
        except Exception as exc:
            self._warn.warning("encode", "snapshot of %s not encoded: %s", obj.object_id, exc)
            return []
        pic.image, pic.last_sent, pic.sent_any = None, t, True
        if self.store is not None:
            self.store.write(self.camera, obj.object_id, jpeg)
        return [
            Snapshot(self.camera, obj.label, obj.track_id, obj.object_id, jpeg, pic.score, pic.box, pic.time)
        ]

    # -- events --------------------------------------------------------------------------------
    def _event(
        self,
        obj: TrackedObject,
        kind: str,
        reasons: Tuple[str, ...],
        result: Optional[DetectionResult],
        end: bool = False,
        decided: float = 0.0,  # when there is no frame: the time the event was decided
    ) -> ObjectEvent:
        pic = self.pictures.get(obj.object_id)
        width, height = self.frame_size or (0, 0)
        return ObjectEvent(
            camera=self.camera,
            event=kind,
            reasons=reasons,
            track_id=obj.track_id,
            object_id=obj.object_id,
            class_id=obj.class_id,
            label=obj.label,
            score=obj.score,
            top_score=obj.top_score,
            box=obj.box,
            frame_width=width,
            frame_height=height,
            current_zones=() if end else obj.zones,
            entered_zones=tuple(obj.entered),
            stationary=obj.stationary,
            start_time=obj.first_seen,
            end_time=obj.last_seen if end else None,
            time=result.capture_time if result is not None else decided,
            frame_seq=result.seq if result is not None else None,
            has_snapshot=bool(pic is not None and pic.sent_any),
        )


class Tracking:
    """The stage, for every camera; build once per pipeline."""

    def __init__(
        self,
        cfg: TrackingConfig,
        presence: PresenceConfig,
        state_dir: Path,
        run_id: Optional[str] = None,
    ) -> None:
        self.cfg = cfg
        self.presence = PresenceTracker(presence)
        self.run_id = run_id or f"{int(time.time()):x}"
        self.counters = CounterStore(Path(state_dir) / "line_counts.json")
        self._totals: Totals = self.counters.load() if any(c.lines for c in cfg.cameras.values()) else {}
        store_cfg = cfg.snapshots.store
        self.store = (
            snapshots.SnapshotStore(Path(state_dir) / "snapshots", store_cfg)
            if cfg.snapshots.enabled and store_cfg.enabled
            else None
        )
        self._cameras: Dict[str, CameraStage] = {}
        # process() runs in the post-processing thread, expire() in the supervisor's
        self._lock = threading.Lock()

    @property
    def wants_images(self) -> bool:
        """Whether frames must carry their image (for snapshots)."""
        return self.cfg.enabled and self.cfg.snapshots.enabled

    def _camera(self, name: str) -> CameraStage:
        cam = self._cameras.get(name)
        if cam is None:
            zones = self.cfg.cameras.get(name, CameraZones())
            cam = CameraStage(name, self.cfg, zones, self.run_id, self._totals.get(name, {}), self.store)
            self._cameras[name] = cam
        return cam

    def process(self, result: DetectionResult) -> TrackingUpdate:
        """One frame: track ids on its detections, and every event, count and snapshot it decided."""
        presence = tuple(self.presence.update(result))
        if not self.cfg.enabled:
            return TrackingUpdate(dataclasses.replace(result, image=None), presence)
        with self._lock:
            cam = self._camera(result.camera)
            out, events, occupancy, lines, shots = cam.process(result)
            if any(ln.last_direction is not None for ln in lines):
                self._totals[result.camera] = cam.totals
                self.counters.save(self._totals)
        return TrackingUpdate(out, presence, tuple(events), tuple(occupancy), tuple(lines), tuple(shots))

    def expire(self, now: float) -> TrackingUpdate:
        """Cameras that sent no frame for a while (dead, stalled, removed): presence `cleared`, and after
        ``objects.camera_silence_s`` their objects end and their zones empty (thread-safe)."""
        presence = tuple(self.presence.expire(now))
        events: List[ObjectEvent] = []
        occupancy: List[Occupancy] = []
        shots: List[Snapshot] = []
        with self._lock:
            for name, cam in list(self._cameras.items()):
                if now - cam.last_frame < self.cfg.objects.camera_silence_s:
                    continue
                ended, emptied, pictures = cam.end_all(now)
                events += ended
                occupancy += emptied
                shots += pictures
                del self._cameras[name]  # a camera that comes back starts afresh (line totals kept)
                log.info(
                    "camera %s: no frame for %.0f s; its %d object(s) ended",
                    name,
                    now - cam.last_frame,
                    len(ended),
                )
        return TrackingUpdate(None, presence, tuple(events), tuple(occupancy), (), tuple(shots))
