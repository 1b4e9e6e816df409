"""The tracking stage on deterministic synthetic scenes: zones, lines, object lifecycle, persistence;
every message it leads to is checked against its JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgedet.publish import messages as m
from edgedet.publish.schema import MessageValidator
from edgedet.tracking.config import CameraZones, PresenceConfig, TrackingConfig
from edgedet.tracking.stage import Tracking
from edgedet.tracking.values import TrackingUpdate
from edgedet.types import Detection, DetectionResult

W, H = 640, 480
DT = 0.1  # 10 frames per second
T0 = 1_700_000_000.0
ENV = m.Envelope("dev", 1, "epoch", T0)

# foot points (x, y) in pixels per frame; None: not detected in that frame
Path_ = Sequence[Optional[Tuple[float, float]]]


def box_at(foot: Tuple[float, float], w: float = 40.0, h: float = 100.0) -> Tuple[float, float, float, float]:
    x, y = foot
    return (x - w / 2, y - h, x + w / 2, y)


def frame(
    seq: int, feet: Sequence[Tuple[float, float]], score: float = 0.9, label: str = "person"
) -> DetectionResult:
    cid = 0 if label == "person" else 2
    dets = tuple(Detection(*box_at(f), score, cid, label) for f in feet)
    return DetectionResult("cam", seq, T0 + seq * DT, 0.0, W, H, dets)


def config(**camera: Any) -> TrackingConfig:
    scene = {
        "zones": [{"name": "yard", "points": [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]]}],
        # horizontal, drawn left to right: moving down the image is "in"
        "lines": [{"name": "gate", "points": [[0.0, 0.5], [1.0, 0.5]]}],
    }
    scene.update(camera)
    return TrackingConfig(
        tracker={"lost_frames": 5},
        objects={"min_frames": 3, "stationary_after_s": 2.0, "parked_memory_s": 3.0},
        cameras={"cam": CameraZones.model_validate(scene)},
    )


class Run:
    """Feeds paths through a Tracking and keeps every update; validates every message built from them."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.updates: List[TrackingUpdate] = []
        self.seq = 0
        self.validator = MessageValidator()

    def feed(self, *paths: Path_, score: float = 0.9) -> None:
        for feet in zip(*paths):
            self.step([f for f in feet if f is not None], score)

    def step(self, feet: Sequence[Tuple[float, float]], score: float = 0.9) -> TrackingUpdate:
        up = self.tracking.process(frame(self.seq, feet, score))
        self.seq += 1
        self.updates.append(up)
        for msg in self.messages(up):
            assert self.validator.errors(msg) == [], msg
        return up

    @staticmethod
    def messages(up: TrackingUpdate) -> List[Dict[str, Any]]:
        out = [m.build_object_event(e, ENV) for e in up.objects]
        out += [m.build_occupancy(o, ENV) for o in up.occupancy]
        out += [m.build_line_count(c, ENV) for c in up.lines]
        if up.result is not None:
            out.append(m.build_detections(up.result, MODEL, ENV))
        return out

    def events(self) -> List[Tuple[str, Tuple[str, ...], int]]:
        return [(e.event, e.reasons, e.track_id) for u in self.updates for e in u.objects]

    def occupancy(self, zone: str = "yard") -> List[Dict[str, int]]:
        return [
            {c.label: c.count for c in o.counts} for u in self.updates for o in u.occupancy if o.zone == zone
        ]

    def crossings(self) -> List[Tuple[str, Optional[str]]]:
        return [(c.line, c.last_direction) for u in self.updates for c in u.lines if c.last_direction]


MODEL = m.ModelInfo("yolox_nano.onnx", "yolox", "fp32", "onnxruntime", 416, 416)


def line(a: Tuple[float, float], b: Tuple[float, float], n: int) -> List[Tuple[float, float]]:
    return [(a[0] + (b[0] - a[0]) * i / (n - 1), a[1] + (b[1] - a[1]) * i / (n - 1)) for i in range(n)]


def tracking(tmp_path: Path, cfg: Optional[TrackingConfig] = None) -> Tracking:
    return Tracking(cfg or config(), PresenceConfig(), tmp_path, run_id="r1")


def test_walking_down_across_the_line_counts_one_in(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed(line((100, 100), (100, 400), 31) + [None] * 10)
    assert run.crossings() == [("gate", "in")]
    last = [c for u in run.updates for c in u.lines][-1]
    assert [(c.label, c.crossed_in, c.crossed_out) for c in last.counts] == [("person", 1, 0)]


def test_jitter_on_the_line_counts_once(tmp_path: Path) -> None:
    # the line is at y=240, the jitter band 2% of 480 px = 9.6 px either side
    ys = [180, 200, 220, 236, 244, 232, 247, 236, 245, 238, 249, 252, 260, 280, 300]
    run = Run(tracking(tmp_path))
    run.feed([(100.0, float(y)) for y in ys])
    assert run.crossings() == [("gate", "in")]


def test_crossing_back_and_forth_counts_every_crossing(tmp_path: Path) -> None:
    path = (
        line((100, 180), (100, 300), 13) + line((100, 300), (100, 180), 13) + line((100, 180), (100, 300), 13)
    )
    run = Run(tracking(tmp_path))
    run.feed(path)
    assert run.crossings() == [("gate", "in"), ("gate", "out"), ("gate", "in")]


def test_walking_round_the_end_of_a_line_does_not_count(tmp_path: Path) -> None:
    cfg = config(lines=[{"name": "short", "points": [[0.0, 0.5], [0.25, 0.5]]}], zones=[])
    run = Run(tracking(tmp_path, cfg))
    run.feed(line((400, 150), (400, 350), 21))  # x=400 is past the line's end at x=160
    assert run.crossings() == []


def test_entering_and_leaving_a_zone(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    # from the top-left quarter down into the yard (x >= 320, y >= 240), then out to the left
    path = line((200, 150), (450, 400), 50) + line((450, 400), (150, 400), 50) + [None] * 10
    run.feed(path)
    events = run.events()
    assert events[0] == ("new", (), 1)
    reasons = [r for kind, r, _ in events if kind == "update"]
    assert ("entered_zone",) in reasons and ("left_zone",) in reasons
    assert events[-1][0] == "end"
    assert run.occupancy() == [{}, {"person": 1}, {"person": 0}]  # first frame: the empty zone
    ended = next(e for u in run.updates for e in u.objects if e.event == "end")
    assert ended.entered_zones == ("yard",) and ended.current_zones == ()
    assert ended.end_time is not None and ended.end_time > ended.start_time


def test_dwell_delays_counting_an_object_in_a_zone(tmp_path: Path) -> None:
    zones = [{"name": "yard", "points": [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]], "dwell_s": 1.0}]
    run = Run(tracking(tmp_path, config(zones=zones)))
    run.feed([(400.0, 300.0)] * 30)
    occupied = [i for i, u in enumerate(run.updates) for o in u.occupancy if any(c.count for c in o.counts)]
    # confirmed on its 3rd frame (index 2), then 1 s inside at 10 frames per second
    assert occupied == [12]


def test_required_zones_hold_events_back_until_the_object_enters_one(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path, config(required_zones=["yard"])))
    outside = [(100.0, 150.0 + i) for i in range(20)]
    run.feed(outside)
    assert run.events() == []
    run.feed(line((100, 170), (450, 400), 40))
    kinds = run.events()
    assert kinds[0][0] == "new"
    new = next(e for u in run.updates for e in u.objects)
    assert "yard" in new.entered_zones


def test_stationary_then_moving(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed([(100.0, 150.0)] * 30 + line((100, 150), (100, 220), 8))
    reasons = [r for kind, r, _ in run.events() if kind == "update"]
    assert reasons == [("stationary",), ("active",)]
    first_update = next(e for u in run.updates for e in u.objects if e.event == "update")
    assert first_update.stationary and first_update.time - first_update.start_time >= 2.0


def test_an_occlusion_gap_keeps_one_object(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    walk = line((100, 150), (300, 150), 30)
    path: List[Optional[Tuple[float, float]]] = list(walk)
    for i in range(12, 16):
        path[i] = None  # hidden for 4 frames (< lost_frames)
    run.feed(path)
    assert [k for k, _, _ in run.events()] == ["new"]
    ids = {d.track_id for u in run.updates if u.result for d in u.result.detections if d.track_id}
    assert ids == {1}


def test_a_parked_object_lost_and_found_does_not_alert_again(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed([(500.0, 150.0)] * 25)  # stationary after 2 s
    run.feed([None] * 10)  # the track is removed after 5 frames; the object is parked
    run.feed([(501.0, 150.0)] * 5)  # a new track on the same spot takes the object back
    kinds = [(k, r) for k, r, _ in run.events()]
    assert kinds == [("new", ()), ("update", ("stationary",))]
    last_ids = {d.track_id for d in run.updates[-1].result.detections}  # type: ignore[union-attr]
    assert last_ids == {1}
    run.feed([None] * 40)  # gone for longer than parked_memory_s: now it ends
    assert [k for k, _, _ in run.events()][-1] == "end"


def test_false_positive_control_by_median_score_and_area(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    # born at 0.75, confirmed by the tracker at 0.6, then kept alive by its second stage at 0.3:
    # tracked all along, but the median score stays below 0.5
    for i, foot in enumerate(line((100, 150), (200, 150), 20)):
        run.step([foot], (0.75, 0.6)[i] if i < 2 else 0.3)
    assert run.tracking._cameras["cam"].book._by_track  # the tracker did follow it
    assert run.events() == []
    cfg = config()
    small = TrackingConfig(
        tracker=cfg.tracker, objects={"min_frames": 3, "min_area": 0.05}, cameras=cfg.cameras
    )  # 40x100 px is 1.3% of 640x480
    run2 = Run(tracking(tmp_path / "b", small))
    run2.feed(line((100, 150), (200, 150), 20))
    assert run2.events() == []
    assert all(d.track_id is None for u in run2.updates if u.result for d in u.result.detections)


def test_median_score_below_threshold_never_confirms(tmp_path: Path) -> None:
    cfg = config()
    strict = TrackingConfig(
        tracker=cfg.tracker, objects={"min_frames": 3, "min_median_score": 0.95}, cameras=cfg.cameras
    )
    run = Run(tracking(tmp_path, strict))
    run.feed(line((100, 150), (200, 150), 20), score=0.9)
    assert run.events() == []


def test_line_counts_survive_a_restart(tmp_path: Path) -> None:
    first = Run(tracking(tmp_path))
    first.feed(line((100, 150), (100, 350), 21))
    assert first.crossings() == [("gate", "in")]
    second = Run(tracking(tmp_path))  # a new process with the same state_dir
    up = second.step([(100.0, 150.0)])
    assert [(c.line, [(x.label, x.crossed_in, x.crossed_out) for x in c.counts]) for c in up.lines] == [
        ("gate", [("person", 1, 0)])
    ]
    second.feed(line((100, 151), (100, 350), 20))
    last = [c for u in second.updates for c in u.lines][-1]
    assert [(x.label, x.crossed_in) for x in last.counts] == [("person", 2)]


def test_detections_carry_track_ids_only_once_confirmed(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed(line((100, 150), (200, 150), 6))
    per_frame = [[d.track_id for d in u.result.detections] for u in run.updates if u.result]
    assert per_frame[:2] == [[None], [None]] and per_frame[2:] == [[1]] * 4


def test_presence_events_still_come_from_the_stage(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed([(100.0, 150.0)] * 5)
    assert [p.event for u in run.updates for p in u.presence] == ["appeared"]


def test_a_silent_camera_ends_its_objects_and_empties_its_zones(tmp_path: Path) -> None:
    run = Run(tracking(tmp_path))
    run.feed([(400.0, 300.0)] * 5)  # in the yard
    last = T0 + 4 * DT
    early = run.tracking.expire(last + 29.0)  # camera_silence_s is 30 s
    assert early.objects == () and early.occupancy == ()
    up = run.tracking.expire(last + 31.0)
    assert [(e.event, e.track_id, e.time) for e in up.objects] == [("end", 1, last + 31.0)]
    assert [(o.zone, [(c.label, c.count) for c in o.counts]) for o in up.occupancy] == [
        ("yard", [("person", 0)])
    ]
    for msg in Run.messages(up):
        assert run.validator.errors(msg) == [], msg
    back = run.step([(400.0, 300.0)])  # the camera returns: tracking starts afresh
    assert [o.zone for o in back.occupancy] == ["yard"] and back.objects == ()
