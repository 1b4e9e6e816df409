"""A multi-object tracker in the ByteTrack family, for one camera (numpy + scipy only).

Each frame:
1. every track's box is predicted one frame ahead (constant-velocity Kalman filter, kalman.py);
2. high-score detections are matched to confirmed and recently lost tracks (IoU cost, optimal assignment);
3. low-score detections, which a plain tracker would throw away, are matched to the confirmed tracks still
   unmatched: a partly occluded or blurred person keeps the track alive instead of breaking it;
4. the remaining high-score detections are matched to tentative tracks (born last frames), which are
   confirmed after ``confirm_frames`` consecutive matches and dropped at their first miss;
5. detections still unmatched with a score of at least ``new_track_score`` start tentative tracks;
6. a confirmed track unmatched for more than ``lost_frames`` frames is removed.
Boxes of different classes never match. Written from the ByteTrack paper (Zhang et al., 2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from edgedet.tracking import kalman
from edgedet.tracking.config import TrackerConfig

TENTATIVE = 0
TRACKED = 1
LOST = 2


@dataclass(frozen=True)
class TrackedBox:
    """A confirmed track in this frame. ``box`` is the matched detection, or the prediction if unmatched."""

    track_id: int
    box: Tuple[float, float, float, float]
    score: float  # of the matched detection; 0.0 when unmatched this frame
    class_id: int
    matched: bool
    hits: int  # frames with a matched detection since birth
    misses: int = 0  # consecutive frames without a match (0 when matched)


@dataclass(frozen=True)
class TrackerStep:
    """What one ``update`` decided."""

    det_track_ids: Tuple[Optional[int], ...]  # per input detection: its confirmed track, else None
    tracks: Tuple[TrackedBox, ...]  # confirmed tracks alive (matched or briefly lost)
    removed: Tuple[int, ...]  # confirmed tracks given up in this frame

    def visible(self, coast_frames: int) -> Tuple[TrackedBox, ...]:
        """The tracks to show: matched now, or missed for at most ``coast_frames`` frames."""
        return tuple(t for t in self.tracks if t.misses <= coast_frames)


class _Track:
    __slots__ = ("class_id", "hits", "id", "misses", "state", "streak")

    def __init__(self, track_id: int, class_id: int) -> None:
        self.id = track_id
        self.class_id = class_id
        self.state = TENTATIVE
        self.hits = 1
        self.streak = 1
        self.misses = 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _assign(iou: np.ndarray, min_iou: float) -> List[Tuple[int, int]]:
    """Optimal one-to-one matching maximising IoU; pairs below ``min_iou`` are not matches."""
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(1.0 - iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


class ByteTracker:
    """Feed one frame's detections at a time with ``update``; not thread-safe (one per camera)."""

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self._tracks: List[_Track] = []
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._next_id = 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> TrackerStep:
        """``boxes`` (N, 4) xyxy, ``scores`` (N,), ``classes`` (N,) integer class ids."""
        cfg = self.cfg
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        self._mean, self._cov = kalman.predict(self._mean, self._cov)
        predicted = kalman.cxcywh_to_xyxy(self._mean) if len(self._tracks) else np.zeros((0, 4))
        track_cls = np.array([t.class_id for t in self._tracks], dtype=np.int64)
        det_track: List[int] = [-1] * len(boxes)  # index into self._tracks
        matched_tracks = np.zeros(len(self._tracks), dtype=bool)

        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        states = np.array([t.state for t in self._tracks], dtype=np.int64)

        def match(track_idx: np.ndarray, det_idx: np.ndarray, min_iou: float) -> np.ndarray:
            """Match, record, and return the detections left unmatched."""
            if len(track_idx) == 0 or len(det_idx) == 0:
                return det_idx
            iou = iou_matrix(predicted[track_idx], boxes[det_idx])
            iou *= track_cls[track_idx][:, None] == classes[det_idx][None, :]
            used = np.zeros(len(det_idx), dtype=bool)
            for r, c in _assign(iou, min_iou):
                det_track[int(det_idx[c])] = int(track_idx[r])
                matched_tracks[track_idx[r]] = True
                used[c] = True
            return det_idx[~used]

        confirmed = np.flatnonzero(states != TENTATIVE)
        high_left = match(confirmed, high, cfg.match_iou)
        still_tracked = np.flatnonzero((states == TRACKED) & ~matched_tracks)
        match(still_tracked, low, cfg.low_match_iou)
        tentative = np.flatnonzero(states == TENTATIVE)
        high_left = match(tentative, high_left, cfg.tentative_match_iou)

        # correct the matched tracks with their detections
        pairs = [(ti, di) for di, ti in enumerate(det_track) if ti >= 0]
        if pairs:
            rows = np.array([p[0] for p in pairs])
            dets = np.array([p[1] for p in pairs])
            self._mean[rows], self._cov[rows] = kalman.update(self._mean[rows], self._cov[rows], boxes[dets])

        keep = np.ones(len(self._tracks), dtype=bool)
        removed: List[int] = []
        for i, tr in enumerate(self._tracks):
            if matched_tracks[i]:
                tr.hits += 1
                tr.streak += 1
                tr.misses = 0
                if tr.state == LOST or (tr.state == TENTATIVE and tr.streak >= cfg.confirm_frames):
                    tr.state = TRACKED
                continue
            tr.streak = 0
            tr.misses += 1
            if tr.state == TENTATIVE:
                keep[i] = False  # never confirmed: forget at the first miss
            elif tr.misses > cfg.lost_frames:
                keep[i] = False
                removed.append(tr.id)
            else:
                tr.state = LOST
        # a detection whose track is dropped now (cannot happen for matched ones) keeps no id
        births = [int(d) for d in high_left if scores[d] >= cfg.new_track_score]
        new_tracks = [_Track(self._next_id + n, int(classes[d])) for n, d in enumerate(births)]
        self._next_id += len(new_tracks)
        if cfg.confirm_frames <= 1:
            for tr in new_tracks:
                tr.state = TRACKED

        # the reported box is the detection when matched, else the prediction
        out: List[TrackedBox] = []
        det_ids: List[Optional[int]] = [None] * len(boxes)
        for d, ti in enumerate(det_track):
            owner = self._tracks[ti] if ti >= 0 else None
            if owner is not None and owner.state == TRACKED:
                det_ids[d] = owner.id
                out.append(
                    TrackedBox(owner.id, _tuple(boxes[d]), float(scores[d]), owner.class_id, True, owner.hits)
                )
        for i, tr in enumerate(self._tracks):
            if keep[i] and tr.state == LOST:
                out.append(
                    TrackedBox(tr.id, _tuple(predicted[i]), 0.0, tr.class_id, False, tr.hits, tr.misses)
                )
        for tr, d in zip(new_tracks, births):
            if tr.state == TRACKED:
                det_ids[d] = tr.id
                out.append(TrackedBox(tr.id, _tuple(boxes[d]), float(scores[d]), tr.class_id, True, 1))

        # keep the arrays aligned with the track list
        self._tracks = [t for t, k in zip(self._tracks, keep) if k] + new_tracks
        if births:
            m, c = kalman.initiate(boxes[births])
            self._mean = np.concatenate([self._mean[keep], m])
            self._cov = np.concatenate([self._cov[keep], c])
        else:
            self._mean, self._cov = self._mean[keep], self._cov[keep]
        return TrackerStep(tuple(det_ids), tuple(out), tuple(removed))

    def reset(self) -> Sequence[int]:
        """Forget every track (e.g. the camera reconnected); returns the confirmed ids given up."""
        gone = [t.id for t in self._tracks if t.state != TENTATIVE]
        self._tracks = []
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        return gone


def _tuple(box: np.ndarray) -> Tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
