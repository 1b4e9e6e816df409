"""Frames sampled evenly from a video file (calibration data, agreement checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Tuple

import numpy as np

from edgedet.errors import SourceError, require


def sample_indices(total: int, limit: int) -> List[int]:
    """``limit`` frame indices spread evenly over ``total`` frames (all of them when there are fewer)."""
    if total <= limit:
        return list(range(total))
    step = total / float(limit)
    return sorted({int(i * step) for i in range(limit)})


def iter_video_samples(path: Path, limit: int) -> Iterator[Tuple[int, np.ndarray]]:
    """Up to ``limit`` (frame index, BGR frame) pairs spread over the video; frames in between are
    skipped with ``grab()`` (no conversion to BGR). Raises SourceError when the file cannot be opened."""
    cv2: Any = require("cv2", "cv", "reading video frames")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SourceError(f"cannot open video {path} (unknown format or corrupt file)")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(sample_indices(total, limit)) if total > 0 else None
        produced = index = 0
        while produced < limit:
            if wanted is not None and index not in wanted:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            yield index, frame
            index += 1
            produced += 1
    finally:
        cap.release()
