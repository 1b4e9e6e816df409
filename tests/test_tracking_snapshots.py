"""Snapshots: the best picture of each object from real video frames, JPEG-encoded, and the bounded
folder they may be kept in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest

from edgedet.tracking.config import PresenceConfig, SnapshotStoreConfig, TrackingConfig
from edgedet.tracking.snapshots import SnapshotStore, is_cut, quality
from edgedet.tracking.stage import Tracking
from edgedet.tracking.values import Snapshot, TrackingUpdate
from edgedet.types import Detection, DetectionResult

cv2: Any = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def street(shared_dir: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_dir / "data" / "video" / "vtest.avi"))
    ok, image = cap.read()
    cap.release()
    assert ok, "vtest.avi has a first frame"
    return image


def feed(
    tracking: Tracking, image: np.ndarray, frames: List[Tuple[Tuple[float, ...], float]]
) -> List[TrackingUpdate]:
    h, w = image.shape[:2]
    out = []
    for seq, (box, score) in enumerate(frames):
        det = Detection(box[0], box[1], box[2], box[3], score, 0, "person")
        result = DetectionResult("cam", seq, 1000.0 + seq * 0.1, 0.0, w, h, (det,), {}, image)
        out.append(tracking.process(result))
    return out


def snapshots(updates: List[TrackingUpdate]) -> List[Snapshot]:
    return [s for u in updates for s in u.snapshots]


def test_quality_prefers_sure_large_boxes_that_are_not_cut() -> None:
    assert quality((100, 100, 200, 300), 0.9, 640, 480, 2) > quality((100, 100, 150, 200), 0.9, 640, 480, 2)
    assert quality((100, 100, 200, 300), 0.9, 640, 480, 2) > quality((100, 100, 200, 300), 0.5, 640, 480, 2)
    assert is_cut((0, 100, 100, 300), 640, 480, 2)
    cut = quality((0, 100, 110, 320), 0.99, 640, 480, 2)
    assert cut < quality((100, 100, 200, 300), 0.8, 640, 480, 2)


def test_the_best_uncut_picture_is_sent_with_the_new_event(tmp_path: Path, street: np.ndarray) -> None:
    cfg = TrackingConfig(snapshots={"min_interval_s": 0, "crop_margin": 0.0})
    tracking = Tracking(cfg, PresenceConfig(), tmp_path, run_id="r")
    frames = [
        ((0.0, 100.0, 60.0, 260.0), 0.95),  # cut by the left edge
        ((2.0, 100.0, 62.0, 260.0), 0.95),
        ((6.0, 100.0, 66.0, 260.0), 0.9),  # the first uncut one: better than the cut ones
        ((8.0, 100.0, 68.0, 260.0), 0.7),
    ]
    updates = feed(tracking, street, frames)
    new = [e for u in updates for e in u.objects if e.event == "new"]
    assert len(new) == 1 and new[0].has_snapshot
    sent = snapshots(updates)
    assert sent and sent[-1].box == (6.0, 100.0, 66.0, 260.0)
    picture = cv2.imdecode(np.frombuffer(sent[-1].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (160, 60, 3)  # the crop of that box
    # the crop shows the real frame there (JPEG is lossy: compare the mean)
    assert abs(float(picture.mean()) - float(street[100:260, 6:66].mean())) < 3


def test_frame_mode_sends_the_whole_frame_and_the_store_keeps_a_copy(
    tmp_path: Path, street: np.ndarray
) -> None:
    cfg = TrackingConfig(snapshots={"mode": "frame", "store": {"enabled": True}})
    tracking = Tracking(cfg, PresenceConfig(), tmp_path, run_id="r")
    updates = feed(tracking, street, [((300.0 + i, 200.0, 360.0 + i, 360.0), 0.9) for i in range(4)])
    sent = snapshots(updates)
    assert len(sent) == 1
    picture = cv2.imdecode(np.frombuffer(sent[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == street.shape
    stored = tmp_path / "snapshots" / "cam" / f"{sent[0].object_id}.jpg"
    assert stored.read_bytes() == sent[0].jpeg


def test_a_better_picture_waits_for_the_interval(tmp_path: Path, street: np.ndarray) -> None:
    cfg = TrackingConfig(snapshots={"min_interval_s": 1.0})
    tracking = Tracking(cfg, PresenceConfig(), tmp_path, run_id="r")
    # growing boxes: every frame is a better picture; frames are 0.1 s apart
    frames = [((300.0, 200.0 - 4 * i, 360.0 + 2 * i, 360.0), 0.9) for i in range(25)]
    updates = feed(tracking, street, frames)
    sent_at = [i for i, u in enumerate(updates) if u.snapshots]
    assert sent_at == [2, 12, 22]  # at confirmation (3rd frame), then once a second
    reasons = [e.reasons for i in sent_at[1:] for e in updates[i].objects]
    assert reasons == [("snapshot",), ("snapshot",)]


def test_the_snapshot_folder_keeps_the_newest_within_count_and_age(tmp_path: Path) -> None:
    cfg = SnapshotStoreConfig(enabled=True, max_files=2, max_age_s=1000)
    store = SnapshotStore(tmp_path, cfg)
    for i, t in enumerate((100.0, 200.0, 300.0)):
        store.write("cam", f"obj{i}", b"x" * 1000, now=t)
        os.utime(tmp_path / "cam" / f"obj{i}.jpg", (t, t))
    store.prune(now=300.0)
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["obj1.jpg", "obj2.jpg"]
    store.prune(now=1250.0)  # obj1 (t=200) is now older than max_age_s
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["obj2.jpg"]


def test_the_snapshot_folder_keeps_within_its_byte_budget(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, SnapshotStoreConfig(enabled=True, max_bytes=10_000))
    for i, t in enumerate((100.0, 200.0)):
        store.write("cam", f"big{i}", b"x" * 6000)
        os.utime(tmp_path / "cam" / f"big{i}.jpg", (t, t))
    store.prune(now=300.0)
    assert [p.name for p in (tmp_path / "cam").iterdir()] == ["big1.jpg"]  # both would be 12000 bytes


def test_pictures_of_tracks_never_confirmed_are_not_kept(tmp_path: Path, street: np.ndarray) -> None:
    cfg = TrackingConfig(tracker={"lost_frames": 2}, objects={"min_median_score": 0.99})
    tracking = Tracking(cfg, PresenceConfig(), tmp_path, run_id="r")
    feed(tracking, street, [((300.0 + i, 200.0, 360.0 + i, 360.0), 0.9) for i in range(5)])
    camera = tracking._cameras["cam"]
    assert len(camera.pictures) == 1  # candidate kept while the track might still become an object
    h, w = street.shape[:2]
    for seq in range(5, 9):  # the track is lost, then removed without ever being confirmed
        tracking.process(DetectionResult("cam", seq, 1000.0 + seq * 0.1, 0.0, w, h, (), {}, street))
    assert camera.pictures == {}
