"""Typed values the tracking stage hands to the publisher (plain frozen data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from edgedet.types import DetectionResult

Box = Tuple[float, float, float, float]

NEW = "new"
UPDATE = "update"
END = "end"

# why an `update` object event was sent
ENTERED_ZONE = "entered_zone"
LEFT_ZONE = "left_zone"
STATIONARY = "stationary"
ACTIVE = "active"
SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class PresenceEvent:
    """A class appearing in, or clearing from, one camera's view (presence.py)."""

    camera: str
    event: str  # "appeared" or "cleared"
    class_id: int
    class_name: str
    time: float  # wall clock of the frame (or check) that decided it
    frame_seq: Optional[int]
    count: int  # objects of the class in the deciding frame (0 for cleared)
    score: Optional[float]  # best score in the deciding frame (None for cleared)
    first_seen: float  # wall clock the class was first seen in this presence period
    last_seen: float


@dataclass(frozen=True)
class ObjectEvent:
    """One step of a tracked object's life: ``new`` (confirmed), ``update`` (see ``reasons``), ``end``."""

    camera: str
    event: str  # NEW, UPDATE or END
    reasons: Tuple[str, ...]  # for UPDATE: ENTERED_ZONE, LEFT_ZONE, STATIONARY, ACTIVE, SNAPSHOT
    track_id: int  # per camera, restarts at 1 with the daemon
    object_id: str  # unique across restarts: <run id>-<camera>-<track id>
    class_id: int
    label: str
    score: float  # of the latest matched detection
    top_score: float
    box: Box  # latest matched box, source pixels
    frame_width: int
    frame_height: int
    current_zones: Tuple[str, ...]
    entered_zones: Tuple[str, ...]  # every zone the object has been in, in order
    stationary: bool
    start_time: float  # first seen
    end_time: Optional[float]  # last seen, for END
    time: float  # of the frame that decided the event
    frame_seq: Optional[int]
    has_snapshot: bool


@dataclass(frozen=True)
class ClassCount:
    label: str
    count: int


@dataclass(frozen=True)
class Occupancy:
    """Objects in one zone now, per class (sent retained whenever it changes)."""

    camera: str
    zone: str
    counts: Tuple[ClassCount, ...]
    time: float


@dataclass(frozen=True)
class Crossings:
    label: str
    crossed_in: int
    crossed_out: int


@dataclass(frozen=True)
class LineCount:
    """A line's totals since they were first counted (persisted across restarts)."""

    camera: str
    line: str
    counts: Tuple[Crossings, ...]
    time: float
    # the crossing that changed the totals: track id, label, "in" or "out"
    last_track_id: Optional[int] = None
    last_label: Optional[str] = None
    last_direction: Optional[str] = None


@dataclass(frozen=True)
class Snapshot:
    """The best picture so far of one object, JPEG-encoded."""

    camera: str
    label: str
    track_id: int
    object_id: str
    jpeg: bytes
    score: float
    box: Box
    time: float  # capture time of the pictured frame


@dataclass(frozen=True)
class TrackingUpdate:
    """Everything one frame (or one expiry check) produced for the publisher."""

    result: Optional[DetectionResult]  # the frame with track ids; None for an expiry check
    presence: Tuple[PresenceEvent, ...] = ()
    objects: Tuple[ObjectEvent, ...] = ()
    occupancy: Tuple[Occupancy, ...] = ()
    lines: Tuple[LineCount, ...] = ()
    snapshots: Tuple[Snapshot, ...] = ()
