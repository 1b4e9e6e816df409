"""YOLOX raw grid output: [B, N, 5 + C] with N = sum over strides 8/16/32 of (H/s) * (W/s).

Columns: grid-relative cx, cy, log-space w, h, objectness, C class probabilities (both already sigmoid-ed,
as Megvii's ONNX export leaves them). Boxes decode as cx = (x + grid_x) * stride, w = exp(w) * stride.
"""

from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgedet.models.base import Candidates, best_class, get_output, layout_error, xywh_to_xyxy
from edgedet.models.yolov5 import Yolov5Decoder
from edgedet.types import TensorSpec

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)


def grid_count(width: int, height: int, strides: Sequence[int] = STRIDES) -> int:
    return sum((height // s) * (width // s) for s in strides)


def make_grid(width: int, height: int, strides: Sequence[int] = STRIDES) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 2) cell offsets (x, y) and (N,) strides, rows ordered stride by stride, y-major (YOLOX order)."""
    cells = []
    steps = []
    for s in strides:
        hs, ws = height // s, width // s
        yv, xv = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
        cells.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        steps.append(np.full((hs * ws,), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


class YoloxDecoder:
    family = "yolox"
    nms_inside = False

    def __init__(self, outputs: Sequence[TensorSpec], input_width: int, input_height: int) -> None:
        expected = "one output [B, N, 5 + C] (raw grid, strides 8/16/32)"
        cands = [o for o in outputs if len(o.shape) == 3]
        if len(cands) != 1:
            raise layout_error(self.family, expected, outputs)
        spec = cands[0]
        n, cols = spec.shape[1], spec.shape[2]
        if cols is not None and cols < 6:
            raise layout_error(self.family, expected, outputs)
        self.output_name = spec.name
        self._decoded_in_graph: Optional[bool] = None
        self._as_decoded = Yolov5Decoder([spec])
        self.num_classes: Optional[int] = None if cols is None else cols - 5
        self._grid, self._strides = make_grid(input_width, input_height)
        if n is not None and n != self._grid.shape[0]:
            raise layout_error(
                self.family,
                f"N = {self._grid.shape[0]} rows for a {input_width}x{input_height} input",
                outputs,
            )

    def decode(self, outputs: Mapping[str, np.ndarray], min_score: float) -> List[Candidates]:
        raw = get_output(outputs, self.output_name)
        if raw.ndim != 3 or raw.shape[1] != self._grid.shape[0]:
            raise layout_error(self.family, f"[B, {self._grid.shape[0]}, 5 + C]", [])
        if self._decoded_in_graph is None:
            # log-space w is a few units at most (exp(6) * 8 px is already 3000 px); a median that large
            # means the export decoded the boxes itself (YOLOX's decode_in_inference)
            self._decoded_in_graph = bool(raw.shape[1] and np.median(raw[0, :, 2]) > 6.0)
            if self._decoded_in_graph:
                log.warning(
                    "YOLOX outputs are already decoded to pixels; decoding them as model.family yolov5"
                )
        if self._decoded_in_graph:
            return self._as_decoded.decode(outputs, min_score)
        result = []
        for pred in raw:
            # class probabilities are <= 1, so rows with objectness below the threshold cannot pass
            rows = np.flatnonzero(pred[:, 4] >= min_score)
            p = pred[rows]
            mask, scores, ids = best_class(p[:, 5:], p[:, 4], min_score)
            p, rows = p[mask], rows[mask]
            stride = self._strides[rows]
            cx = (p[:, 0] + self._grid[rows, 0]) * stride
            cy = (p[:, 1] + self._grid[rows, 1]) * stride
            w = np.exp(p[:, 2]) * stride
            h = np.exp(p[:, 3]) * stride
            result.append(Candidates(xywh_to_xyxy(cx, cy, w, h), scores, ids))
        return result
