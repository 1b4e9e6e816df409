"""From tracks to objects: false-positive control, stationary detection and parked-object memory.

A confirmed track becomes an object once it was matched in ``min_frames`` frames with a median score of
at least ``min_median_score`` and a box area within bounds. An object is stationary when its box kept
overlapping its positions of the last ``stationary_after_s`` seconds, and active again once it leaves the
box it had then. A stationary object whose track is lost is parked for ``parked_memory_s``: a new track
of the same class on the same spot takes the object back (same id, no new event).
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

from edgedet.tracking.bytetrack import TrackedBox, TrackerStep, iou_matrix
from edgedet.tracking.config import ObjectsConfig
from edgedet.tracking.values import Box

_SCORE_HISTORY = 50  # matched scores kept for the median
_STATIONARY_SAMPLES = 10  # positions kept over stationary_after_s


@dataclass
class TrackedObject:
    """One object's state, owned by its camera's ObjectBook (mutable, never leaves the stage)."""

    track_id: int
    object_id: str
    class_id: int
    label: str
    first_seen: float
    last_seen: float
    box: Box
    score: float
    top_score: float
    hits: int = 0  # frames with a matched detection
    scores: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=_SCORE_HISTORY))
    confirmed: bool = False
    announced: bool = False  # the `new` event was sent
    stationary: bool = False
    anchor: Optional[Box] = None  # the box when it became stationary
    history: Deque[Tuple[float, Box]] = field(default_factory=collections.deque)
    parked_since: Optional[float] = None  # track lost while stationary
    zones: Tuple[str, ...] = ()
    entered: List[str] = field(default_factory=list)
    matched_now: bool = False


@dataclass
class BookStep:
    """What changed in one frame."""

    alive: List[TrackedObject]  # confirmed objects still there (tracked, briefly lost, or parked)
    matched: List[TrackedObject]  # objects with a detection in this frame (confirmed or not)
    newly_confirmed: List[TrackedObject]
    became_stationary: List[TrackedObject]
    became_active: List[TrackedObject]
    ended: List[TrackedObject]  # confirmed objects gone for good
    dropped: List[TrackedObject]  # tracks that went away before their object was confirmed
    det_object_ids: Tuple[Optional[int], ...]  # per detection: its confirmed object's track id


def _iou(a: Box, b: Box) -> float:
    return float(iou_matrix(np.array([a]), np.array([b]))[0, 0])


class ObjectBook:
    """Objects of one camera, fed with the tracker's output frame by frame."""

    def __init__(self, camera: str, cfg: ObjectsConfig, run_id: str) -> None:
        self.camera = camera
        self.cfg = cfg
        self.run_id = run_id
        self._by_track: Dict[int, TrackedObject] = {}
        self._parked: List[TrackedObject] = []

    def update(
        self,
        step: TrackerStep,
        labels: Dict[int, str],
        frame_size: Tuple[int, int],
        t: float,
    ) -> BookStep:
        cfg = self.cfg
        frame_area = float(max(frame_size[0] * frame_size[1], 1))
        out = BookStep([], [], [], [], [], [], [], ())
        for tb in step.tracks:
            obj = self._by_track.get(tb.track_id)
            if obj is None:
                if not tb.matched:
                    continue
                obj = self._adopt_parked(tb, t) or self._new(tb, labels, t)
                self._by_track[tb.track_id] = obj
            obj.matched_now = tb.matched
            if tb.matched:
                self._observe(obj, tb, t, frame_area, out)
                out.matched.append(obj)
            if obj.confirmed:
                out.alive.append(obj)
        for track_id in step.removed:
            obj = self._by_track.pop(track_id, None)
            if obj is None:
                continue
            if not obj.confirmed:
                out.dropped.append(obj)
                continue
            if obj.stationary and cfg.parked_memory_s > 0:
                obj.parked_since = t
                self._parked.append(obj)
            else:
                out.ended.append(obj)
        for obj in list(self._parked):
            if t - (obj.parked_since or t) >= cfg.parked_memory_s:
                self._parked.remove(obj)
                out.ended.append(obj)
            else:
                out.alive.append(obj)
        out.det_object_ids = tuple(
            self._by_track[tid].track_id
            if tid is not None and tid in self._by_track and self._by_track[tid].confirmed
            else None
            for tid in step.det_track_ids
        )
        return out

    def end_all(self) -> List[TrackedObject]:
        """Every confirmed object (tracked, lost or parked), forgotten: the camera went silent."""
        gone = [o for o in self._by_track.values() if o.confirmed] + self._parked
        self._by_track.clear()
        self._parked = []
        return gone

    def _new(self, tb: TrackedBox, labels: Dict[int, str], t: float) -> TrackedObject:
        label = labels.get(tb.class_id, str(tb.class_id))
        return TrackedObject(
            track_id=tb.track_id,
            object_id=f"{self.run_id}-{self.camera}-{tb.track_id}",
            class_id=tb.class_id,
            label=label,
            first_seen=t,
            last_seen=t,
            box=tb.box,
            score=tb.score,
            top_score=tb.score,
        )

    def _adopt_parked(self, tb: TrackedBox, t: float) -> Optional[TrackedObject]:
        best: Optional[TrackedObject] = None
        best_iou = self.cfg.stationary_iou
        for obj in self._parked:
            if obj.class_id == tb.class_id:
                iou = _iou(obj.box, tb.box)
                if iou >= best_iou:
                    best, best_iou = obj, iou
        if best is not None:
            self._parked.remove(best)
            best.parked_since = None
        return best

    def _observe(
        self, obj: TrackedObject, tb: TrackedBox, t: float, frame_area: float, out: BookStep
    ) -> None:
        cfg = self.cfg
        obj.box, obj.score, obj.last_seen = tb.box, tb.score, t
        obj.top_score = max(obj.top_score, tb.score)
        obj.hits = tb.hits  # counted by the tracker from the track's first frame
        obj.scores.append(tb.score)
        if not obj.confirmed:
            area = (tb.box[2] - tb.box[0]) * (tb.box[3] - tb.box[1]) / frame_area
            if (
                obj.hits >= cfg.min_frames
                and statistics.median(obj.scores) >= cfg.min_median_score
                and cfg.min_area <= area <= cfg.max_area
                and (cfg.classes is None or obj.label in cfg.classes)
            ):
                obj.confirmed = True
                out.newly_confirmed.append(obj)
        self._stationary(obj, t, out)

    def _stationary(self, obj: TrackedObject, t: float, out: BookStep) -> None:
        cfg = self.cfg
        window = cfg.stationary_after_s
        if obj.stationary:
            if obj.anchor is not None and _iou(obj.anchor, obj.box) < cfg.stationary_iou:
                obj.stationary = False
                obj.anchor = None
                obj.history.clear()
                if obj.confirmed:
                    out.became_active.append(obj)
            return
        hist = obj.history
        if not hist or t - hist[-1][0] >= window / _STATIONARY_SAMPLES:
            hist.append((t, obj.box))
        while len(hist) >= 2 and hist[1][0] <= t - window:
            hist.popleft()
        if hist[0][0] > t - window:
            return  # not watched long enough yet
        ious = iou_matrix(np.array([obj.box]), np.array([b for _, b in hist]))[0]
        if float(ious.min()) >= cfg.stationary_iou:
            obj.stationary = True
            obj.anchor = obj.box
            if obj.confirmed:
                out.became_stationary.append(obj)
