"""The ByteTrack-style tracker on synthetic motion, and the benchmark's seeded degradation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

from edgedet.tracking import bench
from edgedet.tracking.bytetrack import ByteTracker, TrackerStep
from edgedet.tracking.config import TrackerConfig

Box = Tuple[float, float, float, float]


def person(x: float, y: float, w: float = 40.0, h: float = 100.0) -> Box:
    return (x, y, x + w, y + h)


def run(tracker: ByteTracker, frames: Sequence[Sequence[Tuple[Box, float, int]]]) -> List[TrackerStep]:
    out = []
    for dets in frames:
        boxes = np.array([d[0] for d in dets], dtype=np.float64).reshape(-1, 4)
        out.append(
            tracker.update(boxes, np.array([d[1] for d in dets]), np.array([d[2] for d in dets], dtype=int))
        )
    return out


def ids(step: TrackerStep) -> List[Optional[int]]:
    return list(step.det_track_ids)


def test_a_track_keeps_its_id_across_an_occlusion_gap() -> None:
    tracker = ByteTracker(TrackerConfig(lost_frames=10))
    frames: List[List[Tuple[Box, float, int]]] = []
    for i in range(30):
        frames.append([] if 10 <= i < 16 else [(person(100 + 8 * i, 200), 0.9, 0)])
    steps = run(tracker, frames)
    seen = {i for s in steps for i in s.det_track_ids if i is not None}
    assert seen == {1}
    assert ids(steps[16]) == [1]  # found again where the constant-velocity prediction put it
    assert not any(s.removed for s in steps)


def test_a_track_lost_longer_than_the_buffer_is_removed_and_a_new_one_starts() -> None:
    tracker = ByteTracker(TrackerConfig(lost_frames=3))
    frames = [[(person(100, 200), 0.9, 0)]] * 5 + [[]] * 5 + [[(person(100, 200), 0.9, 0)]] * 3
    steps = run(tracker, frames)
    assert [s.removed for s in steps if s.removed] == [(1,)]
    assert ids(steps[-1]) == [2]


def test_low_score_detections_keep_a_confirmed_track_alive() -> None:
    frames = [[(person(100 + 5 * i, 200), 0.9 if i < 5 or i >= 15 else 0.3, 0)] for i in range(20)]
    with_low = run(ByteTracker(TrackerConfig(low_score=0.1, lost_frames=5)), frames)
    assert all(ids(s) == [1] for s in with_low[1:])  # the second stage matched the 0.3 boxes
    # without the second stage the same scores are ignored: the track is lost and a new one starts
    without = run(ByteTracker(TrackerConfig(low_score=0.5, lost_frames=5)), frames)
    assert ids(without[10]) == [None]
    assert ids(without[-1]) == [2]


def test_low_score_detections_never_start_a_track() -> None:
    steps = run(ByteTracker(TrackerConfig()), [[(person(100, 200), 0.4, 0)]] * 10)
    assert all(s.det_track_ids == (None,) and not s.tracks for s in steps)


def test_a_single_frame_false_positive_gets_no_id() -> None:
    frames = [[(person(100, 200), 0.9, 0)]] + [[]] * 3
    steps = run(ByteTracker(TrackerConfig(confirm_frames=2)), frames)
    assert all(i is None for s in steps for i in s.det_track_ids)
    assert not any(s.tracks for s in steps)


def test_two_people_walking_past_each_other_keep_their_ids() -> None:
    frames = []
    for i in range(40):
        a = person(100 + 10 * i, 200)
        b = person(500 - 10 * i, 230)  # overlapping as they pass, in opposite directions
        frames.append([(a, 0.9, 0), (b, 0.85, 0)])
    steps = run(ByteTracker(TrackerConfig()), frames)
    assert all(ids(s) == [1, 2] for s in steps[1:])


def test_boxes_of_different_classes_never_share_a_track() -> None:
    frames = [[(person(100, 200), 0.9, 0)]] * 3 + [[(person(101, 200), 0.9, 2)]] * 3
    steps = run(ByteTracker(TrackerConfig(lost_frames=1)), frames)
    assert ids(steps[2]) == [1]
    assert ids(steps[-1]) == [2]


def test_unmatched_confirmed_tracks_are_reported_at_their_prediction() -> None:
    frames = [[(person(100 + 10 * i, 200), 0.9, 0)] for i in range(5)] + [[]]
    steps = run(ByteTracker(TrackerConfig()), frames)
    coasting = steps[-1].tracks[0]
    assert not coasting.matched and coasting.misses == 1
    assert 143 < coasting.box[0] <= 152  # moved on past the last box (x=140), at about 10 px per frame
    assert steps[-1].visible(1) and not steps[-1].visible(0)


MOT_GT = """\
1,1,10,20,30,60,1,-1,-1,-1
1,2,200,20,30,60,1,-1,-1,-1
2,1,12,20,30,60,1,-1,-1,-1
2,2,198,20,30,60,0,-1,-1,-1
"""


def test_mot_ground_truth_parsing_skips_ignored_rows() -> None:
    gt = bench.parse_mot(MOT_GT)
    assert sorted(gt) == [1, 2]
    assert gt[1][0] == (1.0, 10.0, 20.0, 40.0, 80.0)
    assert len(gt[2]) == 1  # conf 0: not to be scored


def test_degradation_is_seeded_and_drops_and_scores_as_documented() -> None:
    gt = {f: [(i, 10.0 * i, 0.0, 10.0 * i + 40, 100.0) for i in range(1, 51)] for f in range(1, 201)}
    a, b = bench.degrade(gt, seed=3), bench.degrade(gt, seed=3)
    assert all(np.array_equal(x.det_boxes, y.det_boxes) for x, y in zip(a, b))
    kept = sum(len(f.det_scores) for f in a)
    true_boxes = 200 * 50
    scores = np.concatenate([f.det_scores[: len(f.det_scores)] for f in a])
    # about 10% dropped, about one false positive per frame
    assert 0.87 * true_boxes + 150 < kept < 0.93 * true_boxes + 250
    low = np.mean((scores >= 0.2) & (scores < 0.5))
    assert 0.12 < low < 0.2  # 15% of the true boxes, plus the false positives that land there


def test_benchmark_prints_a_line_per_tracker_on_the_shipped_ground_truth(
    capsys: pytest.CaptureFixture,
) -> None:
    mm = pytest.importorskip("motmetrics")
    gt = Path(mm.__file__).parent / "data" / "TUD-Campus" / "gt.txt"
    frames = bench.degrade(bench.parse_mot(gt.read_text()), seed=0)
    score = bench.evaluate(frames, bench.edgedet_step())
    assert 0.5 < score.mota <= 1.0 and 0.5 < score.idf1 <= 1.0
    assert bench.main(["--gt", str(gt), "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("edgedet ") and "MOTA" in ln and "IDF1" in ln and "IDsw" in ln for ln in lines)
    if bench.reference_step() is not None:  # the `trackers` package, in the tracking-bench extra
        assert any(ln.startswith("trackers.ByteTrack ") and "MOTA" in ln for ln in lines)
    assert any("20 objects" in ln and "ms/frame" in ln for ln in lines)
