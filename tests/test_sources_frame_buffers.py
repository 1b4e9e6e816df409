"""Defect 6 of issue 10: with CUDA preprocessing the sources decode straight into the preprocessor's
pinned (discrete GPU) or mapped (Jetson) frame buffers, which travel with the frame and come back.

The real capture worker, the real file reader on real video, the real CudaPreprocessor and latest-frame
slot; the CUDA runtime is the host-memory double (tests/support/fake_tensorrt: edgedet's CudaRuntime
interface, recording where every upload came from; its letterbox kernel computes in numpy from the
pointers it is given). Every tensor is compared with the CPU path on the very frame it came from, and
buffers are blanked the moment they are handed back, so a frame read from a buffer after its release,
or a buffer decoded into while a frame in it is still needed, shows up as a wrong tensor or picture.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.preprocess.cuda import CudaPreprocessor, DeviceTensor
from edgedet.runtime.slot import LatestSlot
from edgedet.sources import capture as capture_module
from edgedet.sources import open_reader
from edgedet.sources.base import CvCaptureReader
from edgedet.sources.capture import CaptureState, CaptureWorker
from edgedet.sources.config import CameraConfig, FileSource
from edgedet.sources.file import FileReader
from edgedet.sources.frames import MAX_RESIZES, FramePool, frame_pool_for
from edgedet.types import InputSpec, PreparedFrame
from tests.support.fake_tensorrt.memory import HostRuntime

cv2 = pytest.importorskip("cv2")

SPEC = InputSpec(name="images", width=416, height=416)
REPO = Path(__file__).resolve().parent.parent


def decode_all(path: Path, limit: Optional[int] = None) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames: List[np.ndarray] = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def cpu_tensor(image: np.ndarray) -> np.ndarray:
    cpu = CpuPreprocessor(SPEC)
    out = cpu.allocate()
    cpu.run(image, out)
    return out


class BlankingPool(FramePool):
    """The real pool, but a buffer handed back is blanked at once: a later read of it shows."""

    def release(self, image: np.ndarray) -> None:
        if self.owns(image):
            image.fill(0)
        super().release(image)


@pytest.fixture
def blanking(monkeypatch: pytest.MonkeyPatch) -> List[BlankingPool]:
    made: List[BlankingPool] = []

    def make(preprocessor: object, size: int, name: str) -> Optional[FramePool]:
        pool = frame_pool_for(preprocessor, size, name)
        if pool is None:
            return None
        blank = BlankingPool(pool.memory, size, name)
        made.append(blank)
        return blank

    monkeypatch.setattr(capture_module, "frame_pool_for", make)
    return made


def cuda(integrated: bool) -> CudaPreprocessor:
    return CudaPreprocessor(SPEC, runtime=HostRuntime(integrated=integrated, kernels=True))


def file_camera(path: Path = DEMO_CLIP, loop: bool = False) -> CameraConfig:
    source = {"type": "file", "path": str(path), "loop": loop, "pace": "fast"}
    return CameraConfig.model_validate({"name": "cam", "source": source})


def release(frame: PreparedFrame) -> None:
    if callable(frame.release):
        frame.release()


def run_to_end(worker: CaptureWorker, on_frame: Any, timeout: float = 60.0) -> None:
    """Take frames from the worker's slot until its file ended, handing each to ``on_frame``."""
    worker.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            frame = worker.slot.take(0.1)
            if frame is not None:
                on_frame(frame)
            elif worker.status().state == CaptureState.ENDED and len(worker.slot) == 0:
                return
            assert worker.failure is None, worker.failure
        raise AssertionError("the file did not end in time")
    finally:
        worker.stop()
        assert worker.join(5)


def test_frames_are_decoded_into_pinned_pool_buffers_and_given_back(blanking: List[BlankingPool]) -> None:
    reference = decode_all(DEMO_CLIP)
    pre = cuda(integrated=False)  # a discrete GPU: pinned buffers, one asynchronous upload each
    runtime: Any = pre.runtime
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    cam = file_camera()
    worker = CaptureWorker(cam, lambda: open_reader(cam.source), pre, slot)
    checked: List[int] = []

    def check(frame: PreparedFrame) -> None:
        assert isinstance(frame.tensor, DeviceTensor)
        assert np.array_equal(frame.tensor.to_host(), cpu_tensor(reference[frame.seq - 1])), frame.seq
        checked.append(frame.seq)
        release(frame)

    run_to_end(worker, check)
    pool = blanking[0]
    assert worker.status().frames_prepared == len(reference) == 150
    assert len(checked) + slot.dropped == 150
    # the first frame tells the size (decoded the ordinary way); every later one went into a buffer
    assert (pool.pageable, pool.decoded_into) == (1, 149)
    assert pre.frames_by_path == {"pinned": 149, "mapped": 0, "pageable": 1, "staged": 0}
    # the uploads came from the pool's page-locked buffers: a few distinct addresses, reused
    pinned = {a for a, host in runtime.host_buffers.items() if host.device_ptr is None}
    sources = runtime.uploads_from[-150:]
    assert all(a in pinned for a in sources[1:]) and sources[0] not in pinned
    assert 1 <= len(set(sources[1:])) <= pool.size == worker.pool_size + 2
    # every buffer came back: none lent out, and close() freed them
    assert pool.lent() == 0
    assert all(host.freed for host in runtime.host_buffers.values())


def test_kept_pictures_outlive_the_frame_release_mapped(blanking: List[BlankingPool]) -> None:
    """Jetson: mapped buffers read in place. Tracking snapshots keep the picture with the frame, and it
    is rendered after inference has released the PreparedFrame (DetectionResult.image), so a picture
    must never be a pooled buffer that the reader decodes into again: it is a copy, and the buffer
    goes back at once. A slow consumer holds frames while the reader runs ahead."""
    reference = decode_all(DEMO_CLIP)
    pre = cuda(integrated=True)
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    cam = file_camera()
    worker = CaptureWorker(cam, lambda: open_reader(cam.source), pre, slot, keep_image=True)
    released: List[PreparedFrame] = []

    def check(frame: PreparedFrame) -> None:
        assert frame.image is not None and not blanking[0].owns(frame.image)
        assert np.array_equal(np.asarray(frame.tensor), cpu_tensor(reference[frame.seq - 1]))
        release(frame)  # what the inference worker does before tracking renders the picture
        released.append(frame)
        time.sleep(0.002)  # the reader decodes on meanwhile
        for f in released[-5:]:  # the pictures of released frames are still the frames they were
            assert f.image is not None and np.array_equal(f.image, reference[f.seq - 1]), f.seq

    run_to_end(worker, check)
    pool = blanking[0]
    assert pool.lent() == 0
    assert pool.decoded_into == 149 and pool.pageable == 1
    assert pre.frames_by_path["mapped"] == 149 and pre.frames_by_path["pinned"] == 0
    for f in released:
        assert f.image is not None and np.array_equal(f.image, reference[f.seq - 1]), f.seq


class LiveFile(FileReader):
    """The demo clip as fast as it decodes, but treated like a camera: unread frames are replaced."""

    def __init__(self, cfg: FileSource) -> None:
        super().__init__(cfg)
        self.live = True


def test_replaced_and_dropped_frames_give_their_buffers_back(blanking: List[BlankingPool]) -> None:
    reference = decode_all(DEMO_CLIP)
    pre = cuda(integrated=False)
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    cam = file_camera()
    assert isinstance(cam.source, FileSource)
    source = cam.source
    worker = CaptureWorker(cam, lambda: LiveFile(source), pre, slot, pool_size=2)
    taken: List[int] = []

    def slow(frame: PreparedFrame) -> None:
        assert np.array_equal(np.asarray(frame.tensor), cpu_tensor(reference[frame.seq - 1]))
        taken.append(frame.seq)
        time.sleep(0.01)
        release(frame)

    run_to_end(worker, slow)
    status = worker.status()
    pool = blanking[0]
    assert status.frames_dropped_behind > 0  # the mailbox replaced frames the worker had not taken
    assert pool.lent() == 0
    assert pool.decoded_into + pool.pageable == status.frames_read


class SwitchingCamera:
    """A camera that switches resolution twice: 640x480 (demo clip), 768x576 (vtest.avi), 640x480."""

    live = False
    ended = False

    def __init__(self, parts: List[Path], per_part: int) -> None:
        self.parts = [FileReader(FileSource(type="file", path=str(p), pace="fast")) for p in parts]
        self.per_part = per_part
        self.description = "switching camera"
        self.fps: Optional[float] = None
        self.count = 0

    def open(self) -> None:
        for part in self.parts:
            part.open()

    def _current(self) -> FileReader:
        return self.parts[min(self.count // self.per_part, len(self.parts) - 1)]

    def read(self) -> Optional[np.ndarray]:
        return self.read_into(None)

    def read_into(self, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if self.count >= self.per_part * len(self.parts):
            self.ended = True
            return None
        frame = self._current().read_into(out)
        self.count += 1
        return frame

    def close(self) -> None:
        for part in self.parts:
            part.close()


def test_a_resolution_switch_falls_back_for_that_frame_and_then_follows(
    blanking: List[BlankingPool], video_1080p: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vtest = video_1080p.parent / "vtest.avi"
    per_part = 12
    reference = [*decode_all(DEMO_CLIP, per_part), *decode_all(vtest, per_part)]
    reference += decode_all(DEMO_CLIP, per_part)
    pre = cuda(integrated=False)
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    cam = file_camera()
    worker = CaptureWorker(cam, lambda: SwitchingCamera([DEMO_CLIP, vtest, DEMO_CLIP], per_part), pre, slot)
    sizes: Dict[int, tuple] = {}

    def check(frame: PreparedFrame) -> None:
        assert np.array_equal(np.asarray(frame.tensor), cpu_tensor(reference[frame.seq - 1])), frame.seq
        sizes[frame.seq] = (frame.letterbox.source_width, frame.letterbox.source_height)
        release(frame)

    with caplog.at_level(logging.INFO, logger="edgedet.sources.frames"):
        run_to_end(worker, check)
    pool = blanking[0]
    # the first frame and the first frame after each switch come back in new arrays (pageable)
    assert (pool.pageable, pool.decoded_into) == (3, 3 * per_part - 3)
    assert pre.frames_by_path["pageable"] == 3 and pre.frames_by_path["pinned"] == 3 * per_part - 3
    assert sizes[per_part + 1] == (768, 576) and sizes[2 * per_part + 1] == (640, 480)
    switches = [r.getMessage() for r in caplog.records if "switched to" in r.getMessage()]
    assert len(switches) == 2 and "768x576" in switches[0] and "640x480" in switches[1]
    assert pool.lent() == 0 and pool.shape == (480, 640, 3)


def test_pool_ignores_foreign_arrays_and_second_releases_and_stops_following_endless_switches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pre = cuda(integrated=False)
    pool = FramePool(pre, 2, "cam")
    assert pool.acquire() is None  # no size yet
    pool.learn(np.zeros((48, 64, 3), np.uint8))
    a, b = pool.acquire(), pool.acquire()
    assert a is not None and b is not None and a.shape == (48, 64, 3)
    assert pool.acquire() is None  # both lent: the reader decodes the ordinary way
    pool.release(np.zeros((48, 64, 3), np.uint8))  # not ours: ignored
    pool.release(a)
    pool.release(a)  # a second release must not put it in twice
    assert pool.lent() == 1
    c, d = pool.acquire(), pool.acquire()
    assert c is a and d is None
    with caplog.at_level(logging.INFO, logger="edgedet.sources.frames"):
        for i in range(MAX_RESIZES + 1):
            pool.learn(np.zeros((48 + 2 * (i + 1), 64, 3), np.uint8))
    assert not pool.enabled and pool.acquire() is None
    assert sum("pageable) way from now on" in r.getMessage() for r in caplog.records) == 1
    # buffers of an old size lent out at the switch are freed when they come back, not reused
    runtime: Any = pre.runtime
    pool.release(b)
    pool.release(c)
    assert pool.lent() == 0
    assert sum(1 for h in runtime.host_buffers.values() if not h.freed) == 0
    pre.close()


def test_cpu_preprocessing_keeps_plain_arrays() -> None:
    assert frame_pool_for(CpuPreprocessor(SPEC), 5, "cam") is None


class FfmpegFileCapture(CvCaptureReader):
    """The readers' shared OpenCV code (v4l2, rtsp, gstreamer, csi) on a real file via FFMPEG."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"file {path}")

    def _open_capture(self, cv2_module: Any) -> Any:
        return cv2_module.VideoCapture(str(self.path), cv2_module.CAP_FFMPEG)


def test_opencv_decodes_into_a_buffer_that_fits_and_into_a_new_array_otherwise() -> None:
    reference = decode_all(DEMO_CLIP, 3)
    with FfmpegFileCapture(DEMO_CLIP) as reader:
        buf = np.zeros((480, 640, 3), np.uint8)
        frame = reader.read_into(buf)
        assert frame is buf and np.array_equal(buf, reference[0])
        small = np.zeros((48, 64, 3), np.uint8)
        other = reader.read_into(small)
        assert other is not None and other is not small and other.shape == (480, 640, 3)
        assert np.array_equal(other, reference[1]) and not small.any()


def test_frame_buffers_are_freed_once_under_the_preprocessor() -> None:
    pre = cuda(integrated=False)
    runtime: Any = pre.runtime
    buf = pre.frame_buffer(64, 48)
    (host,) = runtime.host_buffers.values()
    pre.free_frame_buffer(np.zeros((48, 64, 3), np.uint8))  # not one of its buffers: ignored
    assert not host.freed
    pre.free_frame_buffer(buf)
    assert host.freed
    pre.free_frame_buffer(buf)  # twice: ignored
    threads = [threading.Thread(target=pre.frame_buffer, args=(64, 48)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pre.close()
    assert all(h.freed for h in runtime.host_buffers.values()) and len(runtime.host_buffers) == 5


@pytest.mark.slow
def test_the_daemon_uploads_from_the_frame_buffers_and_agrees_with_the_cpu_path(tmp_path: Path) -> None:
    """The daemon's pipeline (two cameras, CUDA preprocessing over the host runtime double, TensorRT
    through its double): nearly every frame reaches the kernel from a pinned buffer it was decoded into;
    before the fix every frame took the pageable path."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("daemon_agreement", REPO / "tests/gpu/daemon_agreement.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    out = tmp_path / "agreement.json"
    argv = ["--host-kernels", "--seconds", "4", "--pageable-seconds", "2", "--json", str(out)]
    assert runner.main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["worker_errors"] == {} and summary["agreement"] == 1.0
    for figures in summary["daemon_paths"].values():
        paths = figures["paths"]
        assert paths["pinned"]["frames"] > 10 and paths["pageable"]["frames"] <= 2  # first frame per opening
        assert figures["decoded_into_buffers"] >= paths["pinned"]["frames"]
    without = summary["daemon_without_frame_buffers"]
    assert without["failed"] == {} and without["agreeing_frames"] == without["frames"] > 0
    for figures in without["paths"].values():
        assert figures["paths"]["pinned"]["frames"] == 0 and figures["decoded_into_buffers"] is None
