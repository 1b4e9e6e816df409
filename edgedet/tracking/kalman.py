"""A constant-velocity Kalman filter over boxes, batched over tracks (numpy only).

State per track: centre x, centre y, width, height and their velocities (8 values). The measurement is
the box itself (cx, cy, w, h). Process and measurement noise scale with the box size, so a far-away small
person and a close large one are equally "sure"; the weights are the usual ones for pedestrian tracking
(position noise 1/20 of the size, velocity noise 1/160).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

_POS_WEIGHT = 1.0 / 20.0
_VEL_WEIGHT = 1.0 / 160.0

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x' = x + v (one frame)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) * 0.5
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


def cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    half_w, half_h = state[:, 2] * 0.5, state[:, 3] * 0.5
    return np.stack(
        [state[:, 0] - half_w, state[:, 1] - half_h, state[:, 0] + half_w, state[:, 1] + half_h], axis=1
    )


def _size_scale(wh: np.ndarray) -> np.ndarray:
    """Per track [w, h, w, h]: noise of x and w follows the width, y and h the height."""
    w = np.maximum(wh[:, 0], 1.0)
    h = np.maximum(wh[:, 1], 1.0)
    return np.stack([w, h, w, h], axis=1)


def initiate(boxes_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """New tracks from (N, 4) boxes: zero velocity, uncertainty proportional to the box size."""
    z = xyxy_to_cxcywh(boxes_xyxy)
    n = len(z)
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    scale = _size_scale(z[:, 2:4])
    std = np.concatenate([2.0 * _POS_WEIGHT * scale, 10.0 * _VEL_WEIGHT * scale], axis=1)
    cov = np.zeros((n, 8, 8))
    idx = np.arange(8)
    cov[:, idx, idx] = std**2
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One frame ahead for every track (N, 8) / (N, 8, 8)."""
    if len(mean) == 0:
        return mean, cov
    scale = _size_scale(mean[:, 2:4])
    q = np.concatenate([_POS_WEIGHT * scale, _VEL_WEIGHT * scale], axis=1) ** 2
    new_mean = mean @ _F.T
    new_cov = _F @ cov @ _F.T
    idx = np.arange(8)
    new_cov[:, idx, idx] += q
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, boxes_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Correct N tracks with their N matched boxes."""
    if len(mean) == 0:
        return mean, cov
    z = xyxy_to_cxcywh(boxes_xyxy)
    r = (_POS_WEIGHT * _size_scale(mean[:, 2:4])) ** 2
    s = cov[:, :4, :4].copy()
    idx = np.arange(4)
    s[:, idx, idx] += r
    gain = cov[:, :, :4] @ np.linalg.inv(s)  # (N, 8, 4)
    innovation = z - mean[:, :4]
    new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    new_cov = cov - gain @ cov[:, :4, :]
    return new_mean, new_cov
