"""Defect 6 on a real GPU: the capture worker decodes the demo clip straight into pycuda's page-locked
frame buffers (``cap.read(image=buf)`` into memory from ``cuMemHostAlloc``), every frame after the
first is uploaded from them, and the tensors equal the CPU path's (the kernel is bit-identical)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.runtime.slot import LatestSlot
from edgedet.sources import open_reader
from edgedet.sources.capture import CaptureState, CaptureWorker
from edgedet.sources.config import CameraConfig
from edgedet.types import InputSpec, PreparedFrame

CLIP = Path(__file__).resolve().parent.parent.parent / "edgedet" / "assets" / "demo_street.mp4"
SPEC = InputSpec(name="images", width=416, height=416)


def release(frame: PreparedFrame) -> None:
    if callable(frame.release):
        frame.release()


def test_capture_decodes_into_pinned_buffers_on_the_gpu(
    cuda_runtime: object, demo_frames: List[np.ndarray]
) -> None:
    cv2 = pytest.importorskip("cv2")
    from edgedet.preprocess.cuda import CudaPreprocessor

    cap = cv2.VideoCapture(str(CLIP))
    reference = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        reference.append(frame)
    cap.release()
    pre = CudaPreprocessor(SPEC, runtime=cuda_runtime)  # type: ignore[arg-type]
    cpu = CpuPreprocessor(SPEC)
    expected = cpu.allocate()
    cam = CameraConfig.model_validate(
        {"name": "cam", "source": {"type": "file", "path": str(CLIP), "loop": False, "pace": "fast"}}
    )
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    worker = CaptureWorker(cam, lambda: open_reader(cam.source), pre, slot)
    worker.start()
    checked = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            frame = slot.take(0.1)
            if frame is not None:
                cpu.run(reference[frame.seq - 1], expected)
                assert np.array_equal(np.asarray(frame.tensor), expected), frame.seq
                checked += 1
                release(frame)
            elif worker.status().state == CaptureState.ENDED and len(slot) == 0:
                break
            assert worker.failure is None, worker.failure
    finally:
        worker.stop()
        assert worker.join(5)
    stats = pre.path_stats()
    print(f"frames checked {checked}, per path {stats}")
    assert worker.status().frames_prepared == len(reference)
    assert pre.frames_by_path["pinned"] == len(reference) - 1 and pre.frames_by_path["pageable"] == 1
    pre.close()
