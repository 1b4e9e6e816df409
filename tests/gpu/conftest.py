"""GPU fixtures: the shared CUDA runtime, or a skip naming what is missing."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from edgedet.assets import ASSETS_DIR as ASSETS


@pytest.fixture(scope="session")
def cuda_runtime() -> object:
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        pytest.skip("pycuda is not installed (GPU tests run on the lent GPU machine or a Jetson)")
    from edgedet.cudart import open_runtime
    from edgedet.errors import EdgedetError

    try:
        return open_runtime(0)
    except EdgedetError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")


@pytest.fixture(scope="session")
def demo_frames() -> List[np.ndarray]:
    """A few real frames of the demo clip (640x480 BGR)."""
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(ASSETS / "demo_street.mp4"))
    frames: List[np.ndarray] = []
    while len(frames) < 40:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        pytest.skip("cannot decode the demo clip")
    return frames
