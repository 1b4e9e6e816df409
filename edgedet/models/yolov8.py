"""YOLOv8 / YOLO11 output: [B, 4 + C, N], columns cx, cy, w, h (input pixels) then C class scores.

No objectness: a box's score is its best class score.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

from edgedet.models.base import Candidates, get_output, layout_error, xywh_to_xyxy
from edgedet.types import TensorSpec


def _fits(rows: Optional[int], n: Optional[int]) -> bool:
    """4 + C rows (C >= 1), fewer than the N candidate columns (thousands in any real export)."""
    if rows is not None and rows < 5:
        return False
    return rows is None or n is None or rows < n


class Yolov8Decoder:
    family = "yolov8"
    nms_inside = False

    def __init__(self, outputs: Sequence[TensorSpec]) -> None:
        cands = [o for o in outputs if len(o.shape) == 3]
        if len(cands) != 1 or not _fits(cands[0].shape[1], cands[0].shape[2]):
            raise layout_error(
                self.family, "one output [B, 4 + C, N] (xywh, classes; no objectness)", outputs
            )
        self.output_name = cands[0].name
        rows = cands[0].shape[1]
        self.num_classes: Optional[int] = None if rows is None else rows - 4

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]:
        raw = get_output(outputs, self.output_name)
        result = []
        for pred in raw:
            cls = pred[4:]  # (C, N)
            ids = np.argmax(cls, axis=0)
            scores = np.take_along_axis(cls, ids[None, :], axis=0)[0]
            keep = np.flatnonzero(scores >= min_score)
            box = pred[:4, keep]
            result.append(
                Candidates(
                    xywh_to_xyxy(box[0], box[1], box[2], box[3]),
                    scores[keep].astype(np.float32),
                    ids[keep].astype(np.int64),
                )
            )
        return result
