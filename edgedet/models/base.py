"""What every output decoder returns, and the protocol they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence

import numpy as np

from edgedet.errors import ModelError
from edgedet.types import TensorSpec

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

FAMILIES = ("yolox", "yolov5", "yolov8", "efficient_nms")


@dataclass
class Candidates:
    """Boxes of one image in model-input pixels, before thresholds per class, NMS and mapping back."""

    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class Decoder(Protocol):
    """Turns raw backend outputs into candidates per batch item.

    ``nms_inside`` is True for end-to-end exports (the model already did NMS). ``num_classes`` is None when
    the outputs do not tell.
    """

    family: str
    nms_inside: bool
    num_classes: Optional[int]

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]: ...


def describe_outputs(outputs: Sequence[TensorSpec]) -> str:
    def dim(d: Optional[int]) -> str:
        return "?" if d is None else str(d)

    return ", ".join(f"{o.name} [{', '.join(dim(d) for d in o.shape)}]" for o in outputs)


def layout_error(family: str, expected: str, outputs: Sequence[TensorSpec]) -> ModelError:
    return ModelError(
        f"model.family {family} expects {expected}, but the model outputs {describe_outputs(outputs)}"
    )


def get_output(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return outputs[name]
    except KeyError:
        raise ModelError(
            f"backend returned no output named {name!r} (got {', '.join(outputs) or 'nothing'})"
        ) from None


def xywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    out = np.empty((cx.shape[0], 4), dtype=np.float32)
    out[:, 0] = cx - w * 0.5
    out[:, 1] = cy - h * 0.5
    out[:, 2] = cx + w * 0.5
    out[:, 3] = cy + h * 0.5
    return out


def best_class(
    class_scores: np.ndarray, objectness: Optional[np.ndarray], min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row mask, score, class id) of each row's best class: score = objectness * class score.

    ``class_scores`` is (N, C). Rows scoring below ``min_score`` are masked out.
    """
    ids = np.argmax(class_scores, axis=1)
    scores = np.take_along_axis(class_scores, ids[:, None], axis=1)[:, 0].astype(np.float32)
    if objectness is not None:
        scores = scores * objectness.astype(np.float32)
    mask = scores >= min_score
    return mask, scores[mask], ids[mask].astype(np.int64)
