"""`python -m edgedet.tracking.bench --gt PATH/gt.txt [--seed N]`: tracker quality and cost.

Detections are derived from a MOT ground truth (e.g. motmetrics/data/TUD-Campus/gt.txt, which the
``motmetrics`` package ships) by a seeded degradation, documented in ``degrade``:
- 10% of the true boxes are dropped (missed detections);
- every kept box is jittered: centre by N(0, 5% of the box's width/height), width and height by a factor
  1 + N(0, 5%);
- scores: 15% of the kept boxes get a score in the low band U[0.2, 0.5) (only a second association stage
  uses those), the others U[0.7, 1.0);
- false positives: Poisson(1) per frame, boxes of a true box's size at a uniform random place, score
  U[0.1, 1.0).
The same detections go through edgedet's tracker and through the ``trackers`` package's ByteTrack
(a reference, installed only in the benchmark's environment: pip install 'edgedet[tracking-bench]'),
scored with motmetrics (IoU >= 0.5). A synthetic scene of 20 moving objects measures the cost per frame
of each tracker, and of edgedet's whole tracking stage (tracker, objects, two zones, two lines).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedet.errors import EdgedetError, require
from edgedet.tracking.bytetrack import ByteTracker, iou_matrix
from edgedet.tracking.config import (
    CameraZones,
    PresenceConfig,
    SnapshotConfig,
    TrackerConfig,
    TrackingConfig,
)
from edgedet.tracking.stage import Tracking
from edgedet.types import Detection, DetectionResult

DROP = 0.10
JITTER = 0.05
LOW_BAND = (0.2, 0.5)
LOW_SHARE = 0.15
HIGH_BAND = (0.7, 1.0)
FALSE_POSITIVES_PER_FRAME = 1.0


@dataclass(frozen=True)
class FrameData:
    """One frame: ground-truth ids/boxes and the degraded detections (xyxy)."""

    gt_ids: np.ndarray
    gt_boxes: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray


# a tracker under test: (boxes, scores) -> (ids, boxes) of the tracks it reports in that frame
Step = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def parse_mot(text: str) -> Dict[int, List[Sequence[float]]]:
    """MOT-format lines (frame, id, left, top, width, height, conf, ...); conf 0 rows are ignored."""
    frames: Dict[int, List[Sequence[float]]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            frame, tid, x, y, w, h = (float(v) for v in parts[:6])
            conf = float(parts[6]) if len(parts) > 6 else 1.0
        except ValueError as exc:
            raise EdgedetError(f"line {n}: not a MOT ground-truth line: {line.strip()!r}") from exc
        if conf == 0:
            continue
        frames.setdefault(int(frame), []).append((tid, x, y, x + w, y + h))
    return frames


def degrade(gt: Dict[int, List[Sequence[float]]], seed: int) -> List[FrameData]:
    """The seeded degradation described in the module docstring."""
    rng = np.random.default_rng(seed)
    all_boxes = np.array([row[1:] for rows in gt.values() for row in rows], dtype=np.float64)
    width = float(all_boxes[:, 2].max())
    height = float(all_boxes[:, 3].max())
    sizes = np.stack([all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1]], axis=1)
    out: List[FrameData] = []
    for frame in range(1, max(gt) + 1):
        rows = np.array(gt.get(frame, []), dtype=np.float64).reshape(-1, 5)
        ids, boxes = rows[:, 0].astype(np.int64), rows[:, 1:]
        keep = rng.random(len(boxes)) >= DROP
        kept = boxes[keep]
        w, h = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
        cx = (kept[:, 0] + kept[:, 2]) / 2 + rng.normal(0, JITTER, len(kept)) * w
        cy = (kept[:, 1] + kept[:, 3]) / 2 + rng.normal(0, JITTER, len(kept)) * h
        w = w * (1 + rng.normal(0, JITTER, len(kept)))
        h = h * (1 + rng.normal(0, JITTER, len(kept)))
        dets = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        low = rng.random(len(kept)) < LOW_SHARE
        scores = np.where(low, rng.uniform(*LOW_BAND, len(kept)), rng.uniform(*HIGH_BAND, len(kept)))
        n_fp = int(rng.poisson(FALSE_POSITIVES_PER_FRAME))
        fp_size = sizes[rng.integers(0, len(sizes), n_fp)]
        fx = rng.uniform(0, 1, n_fp) * np.maximum(width - fp_size[:, 0], 1)
        fy = rng.uniform(0, 1, n_fp) * np.maximum(height - fp_size[:, 1], 1)
        fps = np.stack([fx, fy, fx + fp_size[:, 0], fy + fp_size[:, 1]], axis=1)
        out.append(
            FrameData(
                ids,
                boxes,
                np.concatenate([dets, fps]).reshape(-1, 4),
                np.concatenate([scores, rng.uniform(0.1, 1.0, n_fp)]),
            )
        )
    return out


def edgedet_step() -> Step:
    cfg = TrackerConfig()
    tracker = ByteTracker(cfg)

    def step(boxes: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        result = tracker.update(boxes, scores, np.zeros(len(boxes), dtype=np.int64))
        matched = result.visible(cfg.coast_frames)
        return (
            np.array([t.track_id for t in matched], dtype=np.int64),
            np.array([t.box for t in matched], dtype=np.float64).reshape(-1, 4),
        )

    return step


def reference_step() -> Optional[Step]:
    """The `trackers` package's ByteTrack with its defaults; None when it is not installed."""
    try:
        import supervision as sv
        import trackers
    except ImportError:
        return None
    tracker = trackers.ByteTrackTracker()

    def step(boxes: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        dets = sv.Detections(
            xyxy=boxes.astype(np.float32).reshape(-1, 4),
            confidence=scores.astype(np.float32),
            class_id=np.zeros(len(boxes), dtype=int),
        )
        out = tracker.update(dets)
        ids = np.asarray(out.tracker_id if out.tracker_id is not None else [], dtype=np.int64)
        keep = ids >= 0
        return ids[keep], np.asarray(out.xyxy, dtype=np.float64).reshape(-1, 4)[keep]

    return step


@dataclass(frozen=True)
class Score:
    mota: float
    idf1: float
    id_switches: int
    ms_per_frame: float  # median


def evaluate(frames: Sequence[FrameData], step: Step) -> Score:
    mm: Any = require("motmetrics", "tracking-bench", "scoring trackers")
    acc = mm.MOTAccumulator(auto_id=True)
    costs: List[float] = []
    for f in frames:
        t0 = time.perf_counter()
        ids, boxes = step(f.det_boxes, f.det_scores)
        costs.append((time.perf_counter() - t0) * 1000.0)
        # motmetrics' own iou_matrix calls np.asfarray, gone in numpy 2: the same distances here
        dist = 1.0 - iou_matrix(f.gt_boxes, boxes)
        dist[dist > 0.5] = np.nan
        acc.update(f.gt_ids.tolist(), ids.tolist(), dist)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="run")
    return Score(
        float(summary["mota"].iloc[0]),
        float(summary["idf1"].iloc[0]),
        int(summary["num_switches"].iloc[0]),
        statistics.median(costs),
    )


def synthetic_cost(step: Step, objects: int = 20, frames: int = 300, seed: int = 0) -> float:
    """Median ms per frame on a scene of ``objects`` boxes moving in straight lines with jitter."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0], [1800, 1000], (objects, 2))
    vel = rng.uniform(-4, 4, (objects, 2))
    size = rng.uniform([30, 60], [80, 200], (objects, 2))
    costs: List[float] = []
    for _ in range(frames):
        pos = pos + vel
        centre = pos + rng.normal(0, 1.5, pos.shape)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        scores = rng.uniform(0.3, 1.0, objects)
        t0 = time.perf_counter()
        step(boxes, scores)
        costs.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(costs)


def _required(make: Callable[[], Optional[Step]]) -> Callable[[], Step]:
    def made() -> Step:
        step = make()
        if step is None:
            raise EdgedetError("the reference tracker disappeared")
        return step

    return made


def stage_step() -> Step:
    """The whole tracking stage as the daemon runs it (tracker, objects, two zones, two lines; no
    snapshots), for its cost per frame."""
    import tempfile

    scene = CameraZones.model_validate(
        {
            "zones": [
                {"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]},
                {"name": "middle", "points": [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]},
            ],
            "lines": [
                {"name": "across", "points": [[0, 0.5], [1, 0.5]]},
                {"name": "down", "points": [[0.5, 0], [0.5, 1]]},
            ],
        }
    )
    cfg = TrackingConfig(snapshots=SnapshotConfig(enabled=False), cameras={"cam": scene})
    tracking = Tracking(cfg, PresenceConfig(), Path(tempfile.mkdtemp(prefix="edgedet-bench-")))
    seq = [0]

    def step(boxes: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        dets = tuple(
            Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), 0, "person")
            for b, s in zip(boxes, scores)
        )
        seq[0] += 1
        tracking.process(DetectionResult("cam", seq[0], seq[0] / 30.0, 0.0, 1920, 1080, dets))
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4))

    return step


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgedet.tracking.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--gt", type=Path, required=True, help="MOT ground truth, e.g. TUD-Campus/gt.txt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradation (default 0)")
    args = parser.parse_args(argv)
    try:
        gt = parse_mot(args.gt.read_text(encoding="utf-8"))
        if not gt:
            raise EdgedetError("no ground-truth boxes")
        frames = degrade(gt, args.seed)
        runs: List[Tuple[str, Callable[[], Step]]] = [("edgedet", edgedet_step)]
        if reference_step() is None:
            print(
                "reference: the `trackers` package is not installed (pip install 'edgedet[tracking-bench]')"
            )
        else:
            runs.append(("trackers.ByteTrack", _required(reference_step)))
        boxes = sum(len(f.gt_ids) for f in frames)
        print(f"{args.gt} ({len(frames)} frames, {boxes} true boxes), seed {args.seed}")
        for name, make in runs:
            s = evaluate(frames, make())
            print(
                f"{name:<20} MOTA {s.mota:6.3f}  IDF1 {s.idf1:6.3f}  IDsw {s.id_switches:3d}  "
                f"ms/frame {s.ms_per_frame:6.3f}"
            )
        for name, make in runs + [("edgedet whole stage", stage_step)]:
            print(f"{name:<20} 20 objects (synthetic, 300 frames): ms/frame {synthetic_cost(make()):6.3f}")
    except (OSError, EdgedetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
