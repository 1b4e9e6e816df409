"""Presence events per camera and class, decided from detection results (pure logic, no I/O).

``appeared``: the class was seen in at least K of the last N frames of that camera.
``cleared``: a present class has not been seen for T seconds.
At most one event per camera and class every ``min_interval_s``; a transition held back by that limit
is taken at the first frame (or ``expire`` call) after the interval, if it still holds, so that
appeared/cleared always alternate and the last state reported is the true one.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Set, Tuple

from edgedet.tracking.config import PresenceConfig
from edgedet.tracking.values import PresenceEvent
from edgedet.types import DetectionResult

APPEARED = "appeared"
CLEARED = "cleared"


@dataclass
class _Track:
    class_name: str
    window: Deque[bool]
    present: bool = False
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_event: Optional[float] = None  # wall clock of the last event emitted


@dataclass
class _Camera:
    tracks: Dict[int, _Track] = field(default_factory=dict)


class PresenceTracker:
    """Feed every DetectionResult of every camera to ``update``; call ``expire`` now and then so a
    camera that stopped delivering frames still clears its classes. Thread-safe."""

    def __init__(self, cfg: PresenceConfig) -> None:
        self._cfg = cfg
        self._allowed: Optional[Set[str]] = set(cfg.classes) if cfg.classes is not None else None
        self._cams: Dict[str, _Camera] = {}
        self._lock = threading.Lock()

    def update(self, result: DetectionResult, now: Optional[float] = None) -> List[PresenceEvent]:
        """Account one frame; returns the events it decides (usually none)."""
        t = result.capture_time if now is None else now
        seen: Dict[int, Tuple[str, int, float]] = {}
        for d in result.detections:
            if self._allowed is not None and d.class_name not in self._allowed:
                continue
            name, count, best = seen.get(d.class_id, (d.class_name, 0, 0.0))
            seen[d.class_id] = (name, count + 1, max(best, float(d.score)))
        out: List[PresenceEvent] = []
        with self._lock:
            cam = self._cams.setdefault(result.camera, _Camera())
            for cid, (name, _, _) in seen.items():
                if cid not in cam.tracks:
                    cam.tracks[cid] = _Track(name, collections.deque(maxlen=self._cfg.window_frames))
            for cid, tr in list(cam.tracks.items()):
                hit = cid in seen
                tr.window.append(hit)
                if hit:
                    if not tr.present and tr.first_seen <= 0.0:
                        tr.first_seen = t
                    tr.last_seen = t
                ev = self._decide(result.camera, cid, tr, t, result.seq, seen.get(cid))
                if ev is not None:
                    out.append(ev)
                if self._forgettable(tr, t):
                    # nothing to remember: keeps the table as small as what is on screen
                    del cam.tracks[cid]
        return out

    def expire(self, now: float) -> List[PresenceEvent]:
        """Clear classes whose camera sent no frame with them for T seconds (e.g. a dead camera)."""
        out: List[PresenceEvent] = []
        with self._lock:
            for camera, cam in self._cams.items():
                for cid, tr in list(cam.tracks.items()):
                    if tr.present:
                        ev = self._decide(camera, cid, tr, now, None, None, window_update=False)
                        if ev is not None:
                            out.append(ev)
                    if self._forgettable(tr, now) and now - tr.last_seen >= self._cfg.clear_after_s:
                        del cam.tracks[cid]
        return out

    def present(self, camera: str) -> List[str]:
        """Class names currently reported present on a camera."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                return []
            return sorted(tr.class_name for tr in cam.tracks.values() if tr.present)

    def _forgettable(self, tr: _Track, t: float) -> bool:
        if tr.present or any(tr.window):
            return False
        return tr.last_event is None or t - tr.last_event >= self._cfg.min_interval_s

    def _decide(
        self,
        camera: str,
        class_id: int,
        tr: _Track,
        t: float,
        frame_seq: Optional[int],
        hit: Optional[Tuple[str, int, float]],
        window_update: bool = True,
    ) -> Optional[PresenceEvent]:
        cfg = self._cfg
        if tr.last_event is not None and t - tr.last_event < cfg.min_interval_s:
            return None
        if not tr.present:
            if window_update and sum(tr.window) >= cfg.min_frames:
                tr.present = True
                tr.last_event = t
                count = hit[1] if hit else 0
                score = hit[2] if hit else None
                return PresenceEvent(
                    camera, APPEARED, class_id, tr.class_name, t, frame_seq, count, score, tr.first_seen, t
                )
            if not any(tr.window):
                tr.first_seen = 0.0
            return None
        if t - tr.last_seen >= cfg.clear_after_s:
            tr.present = False
            tr.last_event = t
            ev = PresenceEvent(
                camera, CLEARED, class_id, tr.class_name, t, frame_seq, 0, None, tr.first_seen, tr.last_seen
            )
            tr.first_seen = 0.0
            tr.window.clear()  # a slow camera's old hits must not bring the class straight back
            return ev
        return None
