"""Pick the decoder family from the model's output names and shapes, and build that decoder."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from edgedet.errors import ModelError
from edgedet.models.base import FAMILIES, Decoder, describe_outputs
from edgedet.models.efficient_nms import make_end_to_end_decoder, nms_roles
from edgedet.models.yolov5 import Yolov5Decoder
from edgedet.models.yolov8 import Yolov8Decoder
from edgedet.models.yolox import YoloxDecoder, grid_count
from edgedet.types import TensorSpec


def _grid_sizes(rows: int, input_size: Optional[Tuple[int, int]]) -> Tuple[bool, bool]:
    """(rows match an anchor-free grid, rows match 3 anchors per cell) for strides 8/16/32.

    With the input size unknown, square inputs that are multiples of 32 from 128 to 2048 are tried.
    """
    if input_size is not None:
        cells = grid_count(*input_size)
        return rows == cells, rows == 3 * cells
    sizes = range(128, 2049, 32)
    counts = {grid_count(s, s) for s in sizes}
    return rows in counts, rows % 3 == 0 and rows // 3 in counts


def no_decoder_error(outputs: Sequence[TensorSpec]) -> ModelError:
    return ModelError(
        f"model outputs [{describe_outputs(outputs)}] match no decoder; set model.family "
        f"({', '.join(FAMILIES)})"
    )


def detect_family(outputs: Sequence[TensorSpec], input_size: Optional[Tuple[int, int]] = None) -> str:
    """The decoder family that fits these outputs; ``input_size`` is the model's (width, height).

    Rules: four outputs num/boxes/scores/classes -> efficient_nms. Otherwise exactly one 3-D output
    [B, a, b] (other ranks are ignored: some exports add per-level raw tensors) and:
    a < b -> yolov8 ([B, 4 + C, N]); b == 6 and a is no grid size -> efficient_nms ([B, K, 6] end-to-end);
    a == number of grid cells for strides 8/16/32 -> yolox (raw grid); otherwise b >= 6 -> yolov5.
    """
    if nms_roles(outputs) is not None:
        return "efficient_nms"
    three_d = [o for o in outputs if len(o.shape) == 3]
    if len(three_d) != 1:
        raise no_decoder_error(outputs)
    a, b = three_d[0].shape[1], three_d[0].shape[2]
    if a is not None and b is not None:
        if a < b:
            if a >= 5:
                return "yolov8"
            raise no_decoder_error(outputs)
        anchor_free, anchored = _grid_sizes(a, input_size)
        if b == 6 and not anchor_free and not anchored:
            return "efficient_nms"
        if b >= 6:
            return "yolox" if anchor_free else "yolov5"
        raise no_decoder_error(outputs)
    if a is None and b is not None and b >= 6:
        return "efficient_nms" if b == 6 else "yolov5"
    if b is None and a is not None and a >= 5:
        return "yolov8"
    raise no_decoder_error(outputs)


def make_decoder(family: str, outputs: Sequence[TensorSpec], input_width: int, input_height: int) -> Decoder:
    """Build the decoder for ``family`` ("auto" detects it); a layout that does not fit is a ModelError."""
    if family == "auto":
        family = detect_family(outputs, (input_width, input_height))
    if family == "yolox":
        return YoloxDecoder(outputs, input_width, input_height)
    if family == "yolov5":
        return Yolov5Decoder(outputs)
    if family == "yolov8":
        return Yolov8Decoder(outputs)
    if family == "efficient_nms":
        return make_end_to_end_decoder(outputs)
    raise ModelError(f"unknown model.family {family!r} (auto, {', '.join(FAMILIES)})")
