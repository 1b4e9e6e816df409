"""YOLOv5 / YOLOv7 output: [B, N, 5 + C], rows of cx, cy, w, h (input pixels), objectness, C class scores.

Also fits any anchor-based export that decodes boxes in the graph (and YOLOX exported with decoding on).
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

from edgedet.models.base import Candidates, best_class, get_output, layout_error, xywh_to_xyxy
from edgedet.types import TensorSpec


def _fits(n: Optional[int], cols: Optional[int]) -> bool:
    """5 + C columns (C >= 1), fewer than the N candidate rows."""
    if cols is not None and cols < 6:
        return False
    return n is None or cols is None or cols < n


class Yolov5Decoder:
    family = "yolov5"
    nms_inside = False

    def __init__(self, outputs: Sequence[TensorSpec]) -> None:
        cands = [o for o in outputs if len(o.shape) == 3]
        if len(cands) != 1 or not _fits(cands[0].shape[1], cands[0].shape[2]):
            raise layout_error(self.family, "one output [B, N, 5 + C] (xywh, objectness, classes)", outputs)
        self.output_name = cands[0].name
        cols = cands[0].shape[2]
        self.num_classes: Optional[int] = None if cols is None else cols - 5

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]:
        raw = get_output(outputs, self.output_name)
        result = []
        for pred in raw:
            rows = np.flatnonzero(pred[:, 4] >= min_score)
            p = pred[rows]
            mask, scores, ids = best_class(p[:, 5:], p[:, 4], min_score)
            p = p[mask]
            result.append(Candidates(xywh_to_xyxy(p[:, 0], p[:, 1], p[:, 2], p[:, 3]), scores, ids))
        return result
