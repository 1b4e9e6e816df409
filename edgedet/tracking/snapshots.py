"""The best picture of each object: choosing it (pure), encoding it, and keeping a bounded folder of them.

Better means a higher score on a larger box, and a box cut by the frame edge only wins when nothing
better exists (it is ranked at a quarter of its value).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from edgedet.errors import require
from edgedet.runtime.ratelimit import RateLimitedLog
from edgedet.tracking import draw
from edgedet.tracking.config import SnapshotConfig, SnapshotStoreConfig
from edgedet.tracking.values import Box

log = logging.getLogger(__name__)

_CUT_PENALTY = 0.25


def is_cut(box: Box, width: int, height: int, margin_px: int) -> bool:
    """Whether the box touches the frame edge (the object is probably partly outside)."""
    return (
        box[0] <= margin_px
        or box[1] <= margin_px
        or box[2] >= width - margin_px
        or box[3] >= height - margin_px
    )


def quality(box: Box, score: float, width: int, height: int, margin_px: int) -> float:
    """How good a picture of the object this detection makes (higher is better)."""
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    q = float(score) * float(np.sqrt(area / max(width * height, 1)))
    return q * _CUT_PENALTY if is_cut(box, width, height, margin_px) else q


def render(image: np.ndarray, box: Box, text: str, cfg: SnapshotConfig, color: draw.Color) -> np.ndarray:
    """The picture to encode: a crop around the box, or the whole frame with the box drawn."""
    h, w = image.shape[:2]
    if cfg.mode == "frame":
        out = image.copy()
        draw.box(out, box, color, text)
        return out
    mx = (box[2] - box[0]) * cfg.crop_margin
    my = (box[3] - box[1]) * cfg.crop_margin
    x1, y1 = max(int(box[0] - mx), 0), max(int(box[1] - my), 0)
    x2, y2 = min(int(np.ceil(box[2] + mx)), w), min(int(np.ceil(box[3] + my)), h)
    if x2 <= x1 or y2 <= y1:
        return image.copy()
    return image[y1:y2, x1:x2].copy()


def encode_jpeg(image: np.ndarray, quality_pct: int) -> bytes:
    cv2: Any = require("cv2", "cv", "encoding snapshots")
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality_pct)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


class SnapshotStore:
    """<state_dir>/snapshots/<camera>/<object id>.jpg, pruned oldest first to the count/bytes/age bounds."""

    def __init__(self, root: Path, cfg: SnapshotStoreConfig) -> None:
        self.root = root
        self.cfg = cfg
        self._warn = RateLimitedLog(log, interval_s=60.0)

    def write(self, camera: str, object_id: str, jpeg: bytes, now: Optional[float] = None) -> None:
        folder = self.root / camera
        path = folder / f"{object_id}.jpg"
        tmp = folder / f".{object_id}.jpg.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(jpeg)
            os.replace(tmp, path)
            self.prune(time.time() if now is None else now)
        except OSError as exc:
            self._warn.warning("write", "snapshots: cannot write %s: %s", path, exc)

    def prune(self, now: float) -> None:
        files: List[Tuple[float, int, Path]] = []
        for path in self.root.glob("*/*.jpg"):
            try:
                st = path.stat()
            except OSError:
                continue  # removed meanwhile
            files.append((st.st_mtime, st.st_size, path))
        files.sort(reverse=True)  # newest first
        kept_bytes = 0
        for n, (mtime, size, path) in enumerate(files):
            kept_bytes += size
            if n >= self.cfg.max_files or kept_bytes > self.cfg.max_bytes or now - mtime > self.cfg.max_age_s:
                try:
                    path.unlink()
                except OSError as exc:
                    self._warn.warning("prune", "snapshots: cannot remove %s: %s", path, exc)
