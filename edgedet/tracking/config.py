"""Configuration of the tracking stage: tracker, object confirmation, snapshots, presence events, and
the zones and lines of each camera. The polygon checks live here as validators, so ``edgedet
check-config`` and ``edgedet run`` refuse the same files with the same messages."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from pydantic import Field, model_validator
from typing_extensions import Literal

from edgedet.configbase import Strict
from edgedet.tracking import geometry

_NAME = r"^[A-Za-z0-9_-]+$"


class TrackerConfig(Strict):
    """The per-camera ByteTrack-style tracker (bytetrack.py)."""

    high_score: float = Field(default=0.6, gt=0, le=1)  # first-stage detections
    low_score: float = Field(default=0.1, ge=0, le=1)  # second stage: [low_score, high_score)
    new_track_score: float = Field(default=0.7, gt=0, le=1)  # an unmatched detection starts a track
    match_iou: float = Field(default=0.2, gt=0, le=1)
    low_match_iou: float = Field(default=0.5, gt=0, le=1)
    tentative_match_iou: float = Field(default=0.3, gt=0, le=1)
    confirm_frames: int = Field(default=2, ge=1)  # consecutive matches before a track has an id
    lost_frames: int = Field(default=30, ge=0)  # frames a confirmed track survives without a match
    # a confirmed track missed for up to this many frames is still shown, at its predicted box
    # (bridges single missed detections; the detections message only ever carries real detections)
    coast_frames: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _bands(self) -> TrackerConfig:
        if self.low_score >= self.high_score:
            raise ValueError("low_score must be below high_score")
        return self


class ObjectsConfig(Strict):
    """When a track becomes an object worth an event, and when it counts as stationary."""

    # false-positive control: confirmed after this many matched frames with this median score
    min_frames: int = Field(default=3, ge=1)
    min_median_score: float = Field(default=0.5, ge=0, le=1)
    # box area as a fraction of the frame
    min_area: float = Field(default=0.0, ge=0, le=1)
    max_area: float = Field(default=1.0, gt=0, le=1)
    # stationary: the box kept overlapping its positions of the last stationary_after_s seconds
    stationary_after_s: float = Field(default=10.0, gt=0)
    stationary_iou: float = Field(default=0.6, gt=0, le=1)
    # a stationary object whose track is lost is remembered this long: a new track on the same spot
    # (same class, overlapping) takes its identity back, so a parked car does not alert again
    parked_memory_s: float = Field(default=60.0, ge=0)
    # class names that become objects (None: every class)
    classes: Optional[List[str]] = None
    # a camera with no frame for this long (dead, removed): its objects end, its zones empty
    camera_silence_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _areas(self) -> ObjectsConfig:
        if self.min_area >= self.max_area:
            raise ValueError("min_area must be below max_area")
        return self


class SnapshotStoreConfig(Strict):
    """Snapshots also written under <state_dir>/snapshots/<camera>/, pruned oldest first."""

    enabled: bool = False
    max_files: int = Field(default=500, gt=0)
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)


class SnapshotConfig(Strict):
    """The best picture of each object, as a JPEG (cv2 needed: the `cv` extra, or JetPack's OpenCV)."""

    enabled: bool = True
    mode: Literal["crop", "frame"] = "crop"  # frame: the whole image with the box drawn
    crop_margin: float = Field(default=0.15, ge=0, le=2)  # around the box, as a fraction of its size
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    # a better picture of the same object is sent at most this often
    min_interval_s: float = Field(default=2.0, ge=0)
    # a box within this many pixels of the frame edge is cut off: it only wins without a better one
    edge_margin_px: int = Field(default=2, ge=0)
    store: SnapshotStoreConfig = SnapshotStoreConfig()


class PresenceConfig(Strict):
    """Presence events: `appeared` when a class is seen in K of the last N frames, `cleared` after T s."""

    min_frames: int = Field(default=3, ge=1)  # K
    window_frames: int = Field(default=5, ge=1)  # N
    clear_after_s: float = Field(default=5.0, gt=0)  # T
    # at most one event per camera and class in this many seconds
    min_interval_s: float = Field(default=1.0, ge=0)
    # class names that produce events (None: every class the model reports)
    classes: Optional[List[str]] = None

    @model_validator(mode="after")
    def _k_le_n(self) -> PresenceConfig:
        if self.min_frames > self.window_frames:
            raise ValueError("min_frames must not exceed window_frames")
        return self


Coords = List[Tuple[float, float]]


class ZoneConfig(Strict):
    """A polygon; an object is in it when the bottom-centre of its box is."""

    name: str = Field(pattern=_NAME)
    points: Coords = Field(min_length=3)
    classes: Optional[List[str]] = None  # None: every class
    # an object counts as in the zone once its point stayed inside this long
    dwell_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _simple_polygon(self) -> ZoneConfig:
        if geometry.self_intersects(self.points):
            raise ValueError(f"zone {self.name}: the polygon crosses itself (list the points in order)")
        if geometry.area(self.points) <= 0:
            raise ValueError(f"zone {self.name}: the polygon has no area")
        return self


class LineConfig(Strict):
    """A directed line A->B: crossing from its left-hand to its right-hand side (walking from A to B,
    image coordinates) counts ``in``, the other way ``out``. For a line drawn left to right, ``in`` is
    moving down the image."""

    name: str = Field(pattern=_NAME)
    points: Coords = Field(min_length=2, max_length=2)
    classes: Optional[List[str]] = None
    # the point must get this far past the line (fraction of the frame's smaller side) to count, and
    # come back as far before it can count again: jitter on the line does not count twice
    hysteresis: float = Field(default=0.02, ge=0, le=0.5)

    @model_validator(mode="after")
    def _two_points(self) -> LineConfig:
        if tuple(self.points[0]) == tuple(self.points[1]):
            raise ValueError(f"line {self.name}: its two points are the same")
        return self


class CameraZones(Strict):
    """Zones and lines of one camera. ``units: normalized`` coordinates are 0..1 of the frame's width
    and height; ``pixel`` ones need ``frame_size`` (and are scaled if the camera delivers another size)."""

    units: Literal["normalized", "pixel"] = "normalized"
    frame_size: Optional[Tuple[int, int]] = None  # [width, height]
    zones: List[ZoneConfig] = Field(default_factory=list)
    lines: List[LineConfig] = Field(default_factory=list)
    # object events only for objects that entered one of these zones (empty: every object)
    required_zones: List[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _inside_frame(self) -> CameraZones:
        if self.units == "pixel" and self.frame_size is None:
            raise ValueError("units: pixel needs frame_size: [width, height]")
        if self.frame_size is not None and min(self.frame_size) <= 0:
            raise ValueError("frame_size must be positive")
        width, height = self.frame_size if self.units == "pixel" else (1.0, 1.0)  # type: ignore[misc]
        shapes = [("zone", z.name, z.points) for z in self.zones]
        shapes += [("line", ln.name, ln.points) for ln in self.lines]
        for kind, name, points in shapes:
            for x, y in points:
                if not (0 <= x <= width and 0 <= y <= height):
                    raise ValueError(
                        f"{kind} {name}: point ({x:g}, {y:g}) is outside the frame "
                        f"(0..{width:g} x 0..{height:g} in {self.units} units)"
                    )
        names = [z.name for z in self.zones] + [ln.name for ln in self.lines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"zone and line names must be unique per camera; repeated: {', '.join(dupes)}")
        unknown = sorted(set(self.required_zones) - {z.name for z in self.zones})
        if unknown:
            raise ValueError(f"required_zones names no zone of this camera: {', '.join(unknown)}")
        return self


class TrackingConfig(Strict):
    """The tracking stage between the decoders and the publisher."""

    enabled: bool = True
    tracker: TrackerConfig = TrackerConfig()
    objects: ObjectsConfig = ObjectsConfig()
    snapshots: SnapshotConfig = SnapshotConfig()
    # zones and lines by camera name
    cameras: Dict[str, CameraZones] = Field(default_factory=dict)
