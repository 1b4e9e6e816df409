"""Zones (occupancy, dwell) and directed lines (in/out counts) of one camera; pure logic, no I/O.

Objects are judged by one point, the bottom-centre of their box (where they touch the ground).
Coordinates from the config are scaled to the camera's real frame size on the first frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from edgedet.tracking import geometry
from edgedet.tracking.config import CameraZones, LineConfig, ZoneConfig
from edgedet.tracking.geometry import Point
from edgedet.tracking.values import ClassCount, Crossings, LineCount, Occupancy

IN = "in"
OUT = "out"


@dataclass(frozen=True)
class Placed:
    """An object to place this frame: its id, class name and ground point in pixels."""

    object_id: int
    label: str
    point: Point


def scale_points(
    points: Sequence[Tuple[float, float]], cfg: CameraZones, size: Tuple[int, int]
) -> List[Point]:
    """Config coordinates to pixels of a ``size`` (width, height) frame."""
    width, height = size
    if cfg.units == "normalized":
        return [(x * width, y * height) for x, y in points]
    ref_w, ref_h = cfg.frame_size or size
    return [(x * width / ref_w, y * height / ref_h) for x, y in points]


@dataclass
class _Presence:
    since: float  # when the point entered the polygon
    counted: bool = False  # dwell reached: the object is in the zone


class ZoneTracker:
    """Which objects are in which zone, with dwell, and the occupancy per zone and class."""

    def __init__(self, camera: str, cfg: CameraZones, frame_size: Tuple[int, int]) -> None:
        self.camera = camera
        self.zones: List[Tuple[ZoneConfig, List[Point]]] = [
            (z, scale_points(z.points, cfg, frame_size)) for z in cfg.zones
        ]
        self._inside: Dict[Tuple[str, int], _Presence] = {}
        self._published: Dict[str, Tuple[ClassCount, ...]] = {}

    def update(
        self, objects: Sequence[Placed], t: float
    ) -> Tuple[Dict[int, Tuple[str, ...]], List[Occupancy]]:
        """Zones each object is in now (dwell reached), and occupancy messages for zones that changed.

        Objects not passed are gone: they leave every zone."""
        seen: Set[Tuple[str, int]] = set()
        current: Dict[int, List[str]] = {o.object_id: [] for o in objects}
        counts: Dict[str, Dict[str, int]] = {z.name: {} for z, _ in self.zones}
        for zone, polygon in self.zones:
            for obj in objects:
                if zone.classes is not None and obj.label not in zone.classes:
                    continue
                if not geometry.contains(polygon, obj.point):
                    continue
                key = (zone.name, obj.object_id)
                seen.add(key)
                state = self._inside.setdefault(key, _Presence(t))
                if not state.counted and t - state.since >= zone.dwell_s:
                    state.counted = True
                if state.counted:
                    current[obj.object_id].append(zone.name)
                    per_class = counts[zone.name]
                    per_class[obj.label] = per_class.get(obj.label, 0) + 1
        for key in list(self._inside):
            if key not in seen:
                del self._inside[key]
        changed: List[Occupancy] = []
        for name, per_class in counts.items():
            # classes seen before stay listed at 0, so a consumer sees them leave
            known = {c.label for c in self._published.get(name, ())}
            snapshot = tuple(ClassCount(k, per_class.get(k, 0)) for k in sorted(known | set(per_class)))
            if self._published.get(name) != snapshot:
                self._published[name] = snapshot
                changed.append(Occupancy(self.camera, name, snapshot, t))
        return {k: tuple(v) for k, v in current.items()}, changed


@dataclass
class _Side:
    side: int  # -1 left of A->B, +1 right (image coordinates); 0 not yet known
    point: Point  # last position seen clearly on that side


@dataclass
class LineState:
    """Totals of one line: label -> [in, out]."""

    counts: Dict[str, List[int]] = field(default_factory=dict)


class LineCounter:
    """Counts crossings of directed lines once each: left-to-right of A->B is ``in``.

    A point must get ``hysteresis`` past the line to be on a side; a crossing counts when an object
    that was clearly on one side is clearly on the other and its path crossed the segment (walking
    round the end of the line changes the side without counting)."""

    def __init__(
        self,
        camera: str,
        cfg: CameraZones,
        frame_size: Tuple[int, int],
        totals: Optional[Dict[str, Dict[str, List[int]]]] = None,
    ) -> None:
        self.camera = camera
        margin_base = min(frame_size)
        self.lines: List[Tuple[LineConfig, Point, Point, float]] = []
        for line in cfg.lines:
            a, b = scale_points(line.points, cfg, frame_size)
            self.lines.append((line, a, b, line.hysteresis * margin_base))
        known = totals or {}
        self.state: Dict[str, LineState] = {
            line.name: LineState({k: list(v) for k, v in known.get(line.name, {}).items()})
            for line, _, _, _ in self.lines
        }
        self._sides: Dict[Tuple[str, int], _Side] = {}

    def totals(self) -> Dict[str, Dict[str, List[int]]]:
        return {name: {k: list(v) for k, v in st.counts.items()} for name, st in self.state.items()}

    def current(self, t: float) -> List[LineCount]:
        """Every line's totals (sent at start so a retained topic holds them)."""
        return [self._message(line.name, t) for line, _, _, _ in self.lines]

    def update(self, objects: Sequence[Placed], t: float) -> List[LineCount]:
        """Line totals that changed in this frame (one message per crossing)."""
        out: List[LineCount] = []
        present = {o.object_id for o in objects}
        for line, a, b, margin in self.lines:
            for obj in objects:
                if line.classes is not None and obj.label not in line.classes:
                    continue
                d = geometry.distance_to_line(a, b, obj.point)
                if abs(d) <= margin:
                    continue  # on the line, within the jitter band: no decision
                side = 1 if d > 0 else -1
                key = (line.name, obj.object_id)
                prev = self._sides.get(key)
                self._sides[key] = _Side(side, obj.point)
                if prev is None or prev.side == side:
                    continue
                if not geometry.segments_intersect(prev.point, obj.point, a, b):
                    continue  # went round the end of the line
                direction = IN if side > 0 else OUT
                pair = self.state[line.name].counts.setdefault(obj.label, [0, 0])
                pair[0 if direction == IN else 1] += 1
                out.append(self._message(line.name, t, obj.object_id, obj.label, direction))
        for key in list(self._sides):
            if key[1] not in present:
                del self._sides[key]
        return out

    def _message(
        self,
        name: str,
        t: float,
        track_id: Optional[int] = None,
        label: Optional[str] = None,
        direction: Optional[str] = None,
    ) -> LineCount:
        counts = self.state[name].counts
        rows = tuple(Crossings(k, counts[k][0], counts[k][1]) for k in sorted(counts))
        return LineCount(self.camera, name, rows, t, track_id, label, direction)
