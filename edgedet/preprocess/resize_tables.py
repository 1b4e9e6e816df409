"""OpenCV-compatible bilinear resize tables, shared by the CUDA kernel and its numpy model.

``cv2.resize(..., INTER_LINEAR)`` on uint8 images computes, per output column ``dx`` (and likewise per row):
``f = float32((dx + 0.5) * src/dst - 0.5)``, ``s = floor(f)``, ``f -= s`` and 11-bit fixed-point weights
``round((1 - f) * 2048)``, ``round(f * 2048)``. Columns are clamped to the image (``s < 0`` -> 0 with
``f = 0``; ``s >= src-1`` -> ``src-1`` with ``f = 0``); rows are not: their weights stay, and the two source
rows ``s`` and ``s+1`` are clipped to the image when read (so an upscaled first row mixes row 0 with itself).
The horizontal pass keeps ``S0*a0 + S1*a1`` as an int; the vertical pass of OpenCV's SIMD code (what runs on
x86 and ARM NEON builds) is ``(((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2) >> 2``, saturated to
uint8. Computing the tables on the host once per source size, and doing that integer arithmetic in the
kernel, gives the same uint8 values as OpenCV (checked against cv2 in tests/test_cuda_tables.py for down-
and upscaling), so the CUDA and CPU paths agree to the bit before scaling.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS  # 2048


def linear_table(src: int, dst: int, clamp: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first source index, its weight, the next index's weight) per output index, all int32.

    ``clamp=True`` is OpenCV's column rule (index and weights clamped to the image); ``clamp=False`` its row
    rule (raw index, possibly -1 or src-1 with a non-zero second weight; clip both rows when reading).
    """
    if src <= 0 or dst <= 0:
        raise ValueError(f"sizes must be positive (src={src}, dst={dst})")
    ratio = 1.0 / (float(dst) / float(src))  # OpenCV: scale_x = 1 / inv_scale_x, in double
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * ratio - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low = s < 0
        f[low] = 0.0
        s[low] = 0
        high = s >= src - 1
        f[high] = 0.0
        s[high] = src - 1
    # saturate_cast<short>(float) rounds half to even, as np.rint does
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int32)
    return s.astype(np.int32), w0, w1


def packed_table(src: int, dst: int, clamp: bool = True) -> np.ndarray:
    """The table as the kernel reads it: int32 pairs (index, w0 | w1 << 16), shape (dst, 2).

    Columns use ``clamp=True``, rows ``clamp=False`` (the kernel clips row indices when reading)."""
    s, w0, w1 = linear_table(src, dst, clamp)
    packed = np.empty((dst, 2), dtype=np.int32)
    packed[:, 0] = s
    packed[:, 1] = w0 | (w1 << 16)
    return packed


def resize_like_kernel(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """What the CUDA kernel computes for the resize, in numpy (the kernel's executable specification)."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError("expected an HxWxC uint8 image")
    h, w = image.shape[:2]
    sx, a0, a1 = linear_table(w, new_w, clamp=True)
    sy, b0, b1 = linear_table(h, new_h, clamp=False)
    pixels = image.astype(np.int64)
    sx1 = np.minimum(sx + 1, w - 1)
    horizontal = pixels[:, sx] * a0[None, :, None] + pixels[:, sx1] * a1[None, :, None]
    h0 = horizontal[np.clip(sy, 0, h - 1)] >> 4
    h1 = horizontal[np.clip(sy + 1, 0, h - 1)] >> 4
    r = ((h0 * b0[:, None, None]) >> 16) + ((h1 * b1[:, None, None]) >> 16)
    return np.clip((r + 2) >> 2, 0, 255).astype(np.uint8)
