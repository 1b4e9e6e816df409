"""Presence events: appeared after K of N frames, cleared after T s, rate-limited, per camera and class."""

from __future__ import annotations

from typing import List, Sequence

from edgedet.tracking.config import PresenceConfig
from edgedet.tracking.presence import PresenceTracker
from edgedet.tracking.values import PresenceEvent
from tests.support.mqtt_helpers import result


def feed(
    tr: PresenceTracker, camera: str, frames: Sequence[Sequence[str]], t0: float, dt: float
) -> List[PresenceEvent]:
    out: List[PresenceEvent] = []
    for i, classes in enumerate(frames):
        out += tr.update(result(camera, i, classes, t=t0 + i * dt))
    return out


def test_appears_after_k_of_n_and_clears_after_t() -> None:
    tr = PresenceTracker(PresenceConfig(min_frames=3, window_frames=5, clear_after_s=2.0, min_interval_s=0))
    p = ["person"]
    # hits at frames 0, 2, 4 -> third hit within the last 5 frames appears at frame 4
    evs = feed(tr, "cam1", [p, [], p, [], p], 100.0, 0.1)
    assert [(e.event, e.class_name, e.frame_seq) for e in evs] == [("appeared", "person", 4)]
    assert evs[0].first_seen == 100.0 and evs[0].count == 1
    assert tr.present("cam1") == ["person"]
    # absent for 1.9 s: still present; at 2.0 s: cleared
    assert feed(tr, "cam1", [[]] * 19, 100.5, 0.1) == []
    evs = tr.update(result("cam1", 99, [], t=102.4))
    assert [(e.event, e.class_name) for e in evs] == [("cleared", "person")]
    assert evs[0].last_seen == 100.4 and evs[0].first_seen == 100.0
    assert tr.present("cam1") == []


def test_sparse_hits_never_appear() -> None:
    tr = PresenceTracker(PresenceConfig(min_frames=3, window_frames=5, clear_after_s=2.0, min_interval_s=0))
    frames = [["person"], [], [], [], ["person"], [], [], [], ["person"]] * 3
    assert feed(tr, "cam1", frames, 0.0, 0.1) == []


def test_per_camera_and_class_and_allow_list() -> None:
    tr = PresenceTracker(
        PresenceConfig(
            min_frames=1, window_frames=1, clear_after_s=1.0, min_interval_s=0, classes=["person", "car"]
        )
    )
    evs = tr.update(result("a", 0, ["person", "car", "dog"], t=0.0))
    evs += tr.update(result("b", 0, ["car"], t=0.0))
    assert sorted((e.camera, e.class_name, e.event) for e in evs) == [
        ("a", "car", "appeared"),
        ("a", "person", "appeared"),
        ("b", "car", "appeared"),
    ]
    # camera b keeps seeing its car; camera a sees nothing: only a's classes clear
    evs = tr.update(result("a", 1, [], t=1.5)) + tr.update(result("b", 1, ["car"], t=1.5))
    assert sorted((e.camera, e.class_name, e.event) for e in evs) == [
        ("a", "car", "cleared"),
        ("a", "person", "cleared"),
    ]


def test_rate_limit_holds_back_then_reports_the_true_state() -> None:
    tr = PresenceTracker(PresenceConfig(min_frames=1, window_frames=1, clear_after_s=0.2, min_interval_s=5.0))
    assert [e.event for e in tr.update(result("c", 0, ["person"], t=0.0))] == ["appeared"]
    # gone at 0.3 s but the last event was 0.3 s ago: held back
    assert tr.update(result("c", 1, [], t=0.3)) == []
    assert tr.update(result("c", 2, [], t=3.0)) == []
    # after the interval the clear goes out once, and a new appearance waits for the interval again
    assert [e.event for e in tr.update(result("c", 3, [], t=5.0))] == ["cleared"]
    assert tr.update(result("c", 4, ["person"], t=5.1)) == []
    assert [e.event for e in tr.update(result("c", 5, ["person"], t=10.0))] == ["appeared"]


def test_expire_clears_a_silent_camera() -> None:
    tr = PresenceTracker(PresenceConfig(min_frames=1, window_frames=1, clear_after_s=5.0, min_interval_s=0))
    tr.update(result("dead", 0, ["person"], t=0.0))
    assert tr.expire(4.0) == []
    evs = tr.expire(6.0)
    assert [(e.camera, e.event, e.frame_seq) for e in evs] == [("dead", "cleared", None)]
    assert tr.expire(20.0) == []
