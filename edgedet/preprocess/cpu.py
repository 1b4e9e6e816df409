"""The CPU reference preprocessor (OpenCV resize + one fused numpy op), written into a reusable buffer."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgedet.errors import require
from edgedet.preprocess.base import letterbox_geometry
from edgedet.types import ChannelOrder, InputSpec, Letterbox

log = logging.getLogger(__name__)


def channel_affine(spec: InputSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Per-output-channel float32 factors (a, b) so that value = float32(pixel) * a + b.

    ``a = scale / std`` and ``b = -mean / std`` (mean/std are in the model's channel order, applied
    after scaling), each rounded once to float32. Shared with the CUDA kernel so both use the same
    constants.
    """
    std = np.asarray(spec.std, dtype=np.float64)
    mean = np.asarray(spec.mean, dtype=np.float64)
    a = (spec.scale / std).astype(np.float32)
    b = (-mean / std).astype(np.float32)
    return a, b


class CpuPreprocessor:
    """Letterbox + colour order + scaling + HWC->CHW into a (1, 3, H, W) float32/float16 buffer.

    Exact definition (the CUDA implementation must match it within 1/255 per value):

    1. Geometry: ``scale, new_w, new_h, pad_x, pad_y = letterbox_geometry(src_w, src_h, spec)``
       (``pad_x``/``pad_y`` are whole pixels: 0 for top-left placement, floor((W - new_w) / 2) centred).
    2. Resize: ``cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` on the BGR uint8
       image, i.e. bilinear with half-pixel centres: source x = (x + 0.5) * src_w / new_w - 0.5 clamped to
       the image, likewise y; OpenCV's uint8 path uses 11-bit fixed-point weights and rounds to uint8.
       When the source already has the resized size the image is used as is.
    3. Placement: resized pixel (x, y) goes to model pixel (x + pad_x, y + pad_y); every other model pixel
       is padding with raw value ``spec.pad_value`` in all channels.
    4. Channels: output channel c takes source channel c for BGR, 2 - c for RGB.
    5. Values, computed in float32: ``v = float32(p) * a[c] + b[c]`` with ``a, b = channel_affine(spec)``
       (``a = scale / std``, ``b = -mean / std``), then rounded once to ``spec.dtype``. Padding uses
       ``p = pad_value`` through the same formula.

    One instance per capture thread: it keeps its resize buffer between calls and is not thread-safe.
    """

    def __init__(self, spec: InputSpec) -> None:
        if spec.dtype not in ("float32", "float16"):
            raise ValueError(f"unsupported input dtype {spec.dtype!r} (float32 or float16)")
        self.spec = spec
        self._dtype = np.dtype(spec.dtype)
        self._a, self._b = channel_affine(spec)
        self._a3 = self._a.reshape(3, 1, 1)
        self._b3 = self._b.reshape(3, 1, 1)
        self._add_b = bool(np.any(self._b != 0))
        self._pad = (np.float32(spec.pad_value) * self._a + self._b).reshape(3, 1, 1)
        self._reverse = spec.channel_order == ChannelOrder.RGB  # the source is BGR
        self._resized: Optional[np.ndarray] = None  # HWC uint8 buffer reused while the size holds
        self._scratch: Optional[np.ndarray] = None  # float32 CHW, only for float16 with a mean
        self._geometry: Dict[Tuple[int, int], Tuple[float, int, int, float, float]] = {}
        self._cv2: Any = None

    def allocate(self) -> np.ndarray:
        return np.empty((1, 3, self.spec.height, self.spec.width), dtype=self._dtype)

    def _geometry_for(self, w: int, h: int) -> Tuple[float, int, int, float, float]:
        geo = self._geometry.get((w, h))
        if geo is None:
            if len(self._geometry) > 16:  # a source that changes size often; keep this bounded
                self._geometry.clear()
            geo = letterbox_geometry(w, h, self.spec)
            self._geometry[(w, h)] = geo
        return geo

    def run(self, image: np.ndarray, out: object) -> Letterbox:
        if not isinstance(out, np.ndarray) or out.shape != (1, 3, self.spec.height, self.spec.width):
            raise ValueError("output buffer must come from CpuPreprocessor.allocate()")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {image.shape} {image.dtype}")
        src_h, src_w = int(image.shape[0]), int(image.shape[1])
        scale, new_w, new_h, pad_x, pad_y = self._geometry_for(src_w, src_h)
        resized = self._resize(image, new_w, new_h)

        x0, y0 = int(pad_x), int(pad_y)
        x1, y1 = x0 + new_w, y0 + new_h
        chw = out[0]
        self._fill_pad(chw, x0, y0, x1, y1)
        src = resized.transpose(2, 0, 1)  # views only: no copy for either channel order
        if self._reverse:
            src = src[::-1]
        dst = chw[:, y0:y1, x0:x1]
        if self._dtype == np.float32 or not self._add_b:
            np.multiply(src, self._a3, out=dst, casting="same_kind")
            if self._add_b:
                np.add(dst, self._b3, out=dst)
        else:  # float16 with an offset: do the arithmetic in float32 and round once
            tmp = self._scratch_for(new_w, new_h)
            np.multiply(src, self._a3, out=tmp)
            np.add(tmp, self._b3, out=tmp)
            np.copyto(dst, tmp, casting="same_kind")
        return Letterbox(scale=scale, pad_x=pad_x, pad_y=pad_y, source_width=src_w, source_height=src_h)

    def _resize(self, image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
        if image.shape[1] == new_w and image.shape[0] == new_h:
            return image
        if self._cv2 is None:
            self._cv2 = require("cv2", "cv", "CPU preprocessing")
        buf = self._resized
        if buf is None or buf.shape[:2] != (new_h, new_w):
            buf = self._resized = np.empty((new_h, new_w, 3), dtype=np.uint8)
        src = image if image.flags.c_contiguous else np.ascontiguousarray(image)
        return self._cv2.resize(src, (new_w, new_h), dst=buf, interpolation=self._cv2.INTER_LINEAR)

    def _scratch_for(self, new_w: int, new_h: int) -> np.ndarray:
        if self._scratch is None or self._scratch.shape[1:] != (new_h, new_w):
            self._scratch = np.empty((3, new_h, new_w), dtype=np.float32)
        return self._scratch

    def _fill_pad(self, chw: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
        # only the strips around the image: the buffer may have held another frame's geometry
        pad = self._pad
        if y0 > 0:
            chw[:, :y0, :] = pad
        if y1 < chw.shape[1]:
            chw[:, y1:, :] = pad
        if x0 > 0:
            chw[:, y0:y1, :x0] = pad
        if x1 < chw.shape[2]:
            chw[:, y0:y1, x1:] = pad

    def close(self) -> None:
        self._resized = None
        self._scratch = None
