"""End-to-end exports whose graph already did NMS.

Two layouts:
- EfficientNMS_TRT / BatchedNMS_TRT: four outputs num_dets [B, 1], boxes [B, K, 4] (x1, y1, x2, y2 in
  input pixels), scores [B, K], classes [B, K]; only the first num_dets rows of each item are valid.
- Ultralytics end-to-end / YOLOv10: one output [B, K, 6] with rows x1, y1, x2, y2, score, class.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from edgedet.models.base import Candidates, get_output, layout_error
from edgedet.types import TensorSpec

_EXPECTED = (
    "four outputs num_dets [B, 1], boxes [B, K, 4], scores [B, K], classes [B, K] (EfficientNMS) "
    "or one output [B, K, 6] (x1, y1, x2, y2, score, class)"
)
_HINTS = {
    "num": ("num",),
    "boxes": ("box",),
    "scores": ("score", "conf"),
    "classes": ("class", "label", "cls"),
}


def nms_roles(outputs: Sequence[TensorSpec]) -> Optional[Dict[str, str]]:
    """Map the roles num/boxes/scores/classes to output names, or None when the outputs do not fit."""
    if len(outputs) != 4:
        return None
    boxes = [o for o in outputs if len(o.shape) == 3 and o.shape[2] == 4]
    num = [
        o for o in outputs if len(o.shape) in (1, 2) and o.shape[-1] in (1, None) and "num" in o.name.lower()
    ]
    if not num:
        num = [o for o in outputs if len(o.shape) in (1, 2) and o.shape[-1] == 1]
    if len(boxes) != 1 or len(num) != 1:
        return None
    pair = [o for o in outputs if o is not boxes[0] and o is not num[0] and len(o.shape) == 2]
    if len(pair) != 2:
        return None

    def is_classes(o: TensorSpec) -> bool:
        lower = o.name.lower()
        return any(h in lower for h in _HINTS["classes"]) or o.dtype.startswith(("int", "uint"))

    classes = [o for o in pair if is_classes(o)]
    if len(classes) != 1:
        return None
    scores = pair[0] if pair[1] is classes[0] else pair[1]
    return {"num": num[0].name, "boxes": boxes[0].name, "scores": scores.name, "classes": classes[0].name}


def is_end2end_layout(spec: TensorSpec) -> bool:
    return len(spec.shape) == 3 and spec.shape[2] == 6


class EfficientNmsDecoder:
    family = "efficient_nms"
    nms_inside = True
    num_classes: Optional[int] = None

    def __init__(self, outputs: Sequence[TensorSpec]) -> None:
        roles = nms_roles(outputs)
        if roles is None:
            raise layout_error(self.family, _EXPECTED, outputs)
        self.roles = roles

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]:
        num = get_output(outputs, self.roles["num"]).reshape(-1)
        boxes = get_output(outputs, self.roles["boxes"])
        scores = get_output(outputs, self.roles["scores"])
        classes = get_output(outputs, self.roles["classes"])
        result = []
        for b in range(boxes.shape[0]):
            n = max(0, min(int(num[b]), boxes.shape[1]))
            s = scores[b, :n].astype(np.float32)
            keep = np.flatnonzero(s >= min_score)
            result.append(
                Candidates(
                    boxes[b, keep].astype(np.float32),
                    s[keep],
                    np.rint(classes[b, keep]).astype(np.int64),
                )
            )
        return result


class End2EndDecoder:
    family = "efficient_nms"
    nms_inside = True
    num_classes: Optional[int] = None

    def __init__(self, outputs: Sequence[TensorSpec]) -> None:
        cands = [o for o in outputs if len(o.shape) == 3]
        if len(cands) != 1 or not is_end2end_layout(cands[0]):
            raise layout_error(self.family, _EXPECTED, outputs)
        self.output_name = cands[0].name

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]:
        raw = get_output(outputs, self.output_name)
        result = []
        for pred in raw:
            keep = np.flatnonzero(pred[:, 4] >= min_score)
            p = pred[keep]
            result.append(
                Candidates(
                    p[:, :4].astype(np.float32), p[:, 4].astype(np.float32), np.rint(p[:, 5]).astype(np.int64)
                )
            )
        return result


def make_end_to_end_decoder(outputs: Sequence[TensorSpec]) -> EfficientNmsDecoder | End2EndDecoder:
    if nms_roles(outputs) is not None:
        return EfficientNmsDecoder(outputs)
    return End2EndDecoder(outputs)
