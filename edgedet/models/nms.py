"""Class-aware greedy non-maximum suppression in numpy (vectorised per kept box)."""

from __future__ import annotations

from typing import List

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against many (continuous coordinates, no +1)."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Indices of the boxes kept, best score first.

    A box is suppressed by a higher-scoring kept box of the same class whose IoU with it exceeds
    ``iou_threshold``. Classes are kept apart by shifting each class's boxes to its own region (the
    torchvision ``batched_nms`` trick), so one pass handles every class. Work is one vectorised IoU row
    per kept box, and stops at ``max_detections``.
    """
    n = int(scores.shape[0])
    if n == 0 or max_detections <= 0:
        return np.zeros((0,), dtype=np.int64)
    b = boxes.astype(np.float64, copy=False)
    span = float(np.max(b)) - min(float(np.min(b)), 0.0) + 1.0
    shifted = b + (class_ids.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    while order.size and len(keep) < max_detections:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        if not rest.size:
            break
        iou = box_iou(shifted[i], shifted[rest])
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
