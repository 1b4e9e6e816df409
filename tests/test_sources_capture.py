"""The capture worker on the real demo clip with the real CPU preprocessor and the real latest-frame slot."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP
from edgedet.errors import SourceError
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.runtime.slot import LatestSlot
from edgedet.sources import open_reader
from edgedet.sources.capture import CaptureState, CaptureWorker
from edgedet.sources.config import CameraConfig
from edgedet.sources.file import FileReader
from edgedet.types import InputSpec, PreparedFrame
from tests.support.waiting import wait_for

pytest.importorskip("cv2")

SPEC = InputSpec(name="images", width=416, height=416)


def camera(name: str = "cam", **kw: Any) -> CameraConfig:
    source: Dict[str, Any] = {"type": "file", "path": str(DEMO_CLIP), "loop": False, "pace": "fast"}
    source.update(kw.pop("source", {}))
    return CameraConfig.model_validate({"name": name, "source": source, **kw})


def release(frame: PreparedFrame) -> None:
    if callable(frame.release):
        frame.release()


def make_worker(cam: CameraConfig, factory: Optional[Callable[[], Any]] = None, **kw: Any) -> CaptureWorker:
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    return CaptureWorker(cam, factory or (lambda: open_reader(cam.source)), CpuPreprocessor(SPEC), slot, **kw)


@pytest.fixture
def workers() -> Any:
    made: List[CaptureWorker] = []
    yield made
    for w in made:
        w.stop()
    for w in made:
        assert w.join(5), f"{w.name} did not stop"


def test_file_once_prepares_every_frame_and_ends(workers: List[CaptureWorker]) -> None:
    w = make_worker(camera(), keep_image=True)
    workers.append(w)
    w.start()
    assert w._thread is not None and w._thread.name == "capture-cam"
    seqs: List[int] = []
    while True:
        frame = w.slot.take(0.1)
        if frame is not None:
            assert frame.camera == "cam"
            assert isinstance(frame.tensor, np.ndarray) and frame.tensor.shape == (1, 3, 416, 416)
            assert frame.letterbox.source_width == 640 and frame.letterbox.source_height == 480
            assert frame.image is not None and frame.image.shape == (480, 640, 3)
            seqs.append(frame.seq)
            release(frame)
        elif w.status().state == CaptureState.ENDED and len(w.slot) == 0:
            break
        assert w.failure is None
    status = w.status()
    assert status.frames_read == 150 and status.frames_prepared == 150
    assert status.frames_dropped_pool == 0 and status.frames_dropped_behind == 0
    assert status.source_fps == pytest.approx(10.0)
    assert seqs == sorted(seqs) and seqs[-1] == 150
    # what the consumer missed, the slot replaced and counted; every frame is accounted for
    assert len(seqs) + w.slot.dropped == 150
    assert w.pool is not None and w.pool.free == w.pool.size  # every buffer came back
    assert w.alive and w.heartbeat_age < 1.0  # ended is a state, not an exit: the app decides


def test_slow_consumer_drops_in_the_slot_and_recycles_buffers(workers: List[CaptureWorker]) -> None:
    # realtime pacing: the file behaves like a 10 fps camera, which does not wait for anybody
    w = make_worker(camera(source={"loop": True, "pace": "realtime"}), pool_size=3)
    workers.append(w)
    w.start()
    buffers = set()
    taken = 0
    for _ in range(6):
        frame = w.slot.take(2.0)
        assert frame is not None
        buffers.add(id(frame.tensor))
        taken += 1
        time.sleep(0.25)  # a slow inference
        release(frame)
    status = w.status()
    assert status.state == CaptureState.STREAMING
    assert w.slot.dropped > 0 and status.frames_prepared > taken
    assert status.frames_dropped_pool == 0
    assert len(buffers) <= 3  # the same few buffers, reused
    assert w.heartbeat_age < 1.0


def test_fast_file_plays_every_frame_just_in_time_for_a_slow_consumer(workers: List[CaptureWorker]) -> None:
    w = make_worker(camera())  # pace fast: as fast as the consumer takes frames, none dropped
    workers.append(w)
    w.start()
    seqs: List[int] = []
    for _ in range(5):
        frame = w.slot.take(2.0)
        assert frame is not None
        seqs.append(frame.seq)
        # the consumer announces it is busy for 0.3 s: the next frame must not be read before it is due
        taken_at = time.monotonic()
        w.slot.busy_until = taken_at + 0.3
        release(frame)
        nxt = w.slot.take(2.0)
        assert nxt is not None
        assert nxt.capture_monotonic >= taken_at + 0.3 - 0.1, "read long before the consumer was due"
        seqs.append(nxt.seq)
        release(nxt)
        w.slot.busy_until = 0.0
    assert seqs == list(range(seqs[0], seqs[0] + 10))  # consecutive: nothing skipped or dropped
    assert w.slot.dropped == 0 and w.status().frames_read <= seqs[-1] + 1  # no decoding ahead


def test_consumer_holding_every_buffer_makes_capture_drop_not_block(workers: List[CaptureWorker]) -> None:
    w = make_worker(camera(source={"loop": True, "pace": "realtime"}), pool_size=2)  # a 10 fps "camera"
    workers.append(w)
    w.start()
    held = [w.slot.take(2.0), w.slot.take(2.0)]
    assert all(f is not None for f in held)
    wait_for(lambda: w.status().frames_dropped_pool > 5, 5.0, "pool drops")
    assert w.heartbeat_age < 1.0 and w.failure is None
    prepared = w.status().frames_prepared
    for f in held:
        assert f is not None
        release(f)
    wait_for(lambda: w.status().frames_prepared > prepared + 3, 5.0, "frames again after release")


def test_frame_rate_cap_from_config_and_at_run_time(workers: List[CaptureWorker]) -> None:
    w = make_worker(camera(source={"loop": True, "pace": "realtime"}, max_fps=5.0))
    workers.append(w)
    assert w.max_fps == 5.0
    w.start()
    wait_for(lambda: w.status().frames_read >= 12, 5.0, "frames")
    s = w.status()
    assert s.frames_skipped > 0 and s.frames_prepared < s.frames_read
    w.set_max_fps(2.0)  # the thermal policy throttles
    assert w.status().max_fps == 2.0
    w.set_max_fps(20.0)  # a runtime cap above the configured one does not lift it
    assert w.status().max_fps == 5.0
    w.set_max_fps(None)
    assert w.status().max_fps == 5.0
    with pytest.raises(ValueError):
        w.set_max_fps(0.0)

    uncapped = make_worker(camera(source={"loop": True, "pace": "realtime"}))
    workers.append(uncapped)
    uncapped.start()
    wait_for(lambda: uncapped.status().frames_read >= 5, 5.0, "frames")
    uncapped.set_max_fps(1.0)
    before = uncapped.status()
    wait_for(lambda: uncapped.status().frames_read >= before.frames_read + 8, 5.0, "frames")
    after = uncapped.status()
    assert after.frames_skipped - before.frames_skipped > 0


class InjectingReader:
    """The real file reader, with failed reads and malformed frames slipped in at given positions.

    Stands in for a camera that glitches: the worker must skip these, count them and carry on.
    """

    def __init__(self, inner: FileReader, bad: Dict[int, Any]) -> None:
        self.inner = inner
        self.bad = bad
        self.count = 0
        self.live = True
        self.description = "glitchy " + inner.description

    @property
    def fps(self) -> Optional[float]:
        return self.inner.fps

    @property
    def ended(self) -> bool:
        return self.inner.ended

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Optional[np.ndarray]:
        self.count += 1
        if self.count in self.bad:
            return self.bad[self.count]  # type: ignore[no-any-return]
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def test_corrupt_frames_are_skipped_and_counted(workers: List[CaptureWorker]) -> None:
    cam = camera(source={"loop": False})
    bad = {
        3: None,
        5: np.zeros((480, 640), np.uint8),
        8: np.zeros((480, 640, 4), np.uint8),
        9: np.zeros((480, 640, 3), np.float32),
        10: None,
    }
    made: List[InjectingReader] = []

    def factory() -> InjectingReader:
        made.append(InjectingReader(FileReader(cam.source), dict(bad)))  # type: ignore[arg-type]
        return made[-1]

    w = make_worker(cam, factory)
    workers.append(w)
    w.start()
    wait_for(lambda: w.status().state == CaptureState.ENDED, 10.0, "end of the clip")
    s = w.status()
    assert s.frames_corrupt == 5
    assert s.frames_read == 150 and s.reconnects == 0 and len(made) == 1
    assert w.failure is None


def test_missing_file_at_start_is_a_failure_with_the_message(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    w = make_worker(camera(source={"path": str(missing)}))
    w.start()
    assert w.join(5)
    assert isinstance(w.failure, SourceError)
    assert str(w.failure) == f"file {missing}: no such file"
    s = w.status()
    assert s.state == CaptureState.FAILED and s.last_error == str(w.failure)


def test_retry_first_open_waits_for_the_source_with_backoff(
    tmp_path: Path, workers: List[CaptureWorker]
) -> None:
    later = tmp_path / "later.mp4"
    cam = camera(source={"path": str(later)}, reconnect={"initial_s": 0.2, "max_s": 0.4})
    w = make_worker(cam, retry_first_open=True)
    workers.append(w)
    w.start()
    wait_for(lambda: w.status().reconnects >= 3, 5.0, "retries")
    s = w.status()
    assert s.state == CaptureState.RECONNECTING and "no such file" in (s.last_error or "")
    assert s.reconnects < 15  # spaced by the backoff, not a busy loop
    assert w.heartbeat_age < 1.0 and w.failure is None
    shutil.copy(DEMO_CLIP, later)
    wait_for(lambda: w.status().frames_prepared > 0, 5.0, "frames once the file exists")


class HangingReader:
    """A driver whose read() never returns after a few frames (a dead stream without a read timeout)."""

    live = True
    ended = False

    def __init__(self, inner: FileReader, frames_before_hang: int) -> None:
        self.inner = inner
        self.left = frames_before_hang
        self.release = threading.Event()
        self.closed = False
        self.description = "hanging " + inner.description
        self.fps: Optional[float] = None

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Optional[np.ndarray]:
        if self.left <= 0:
            self.release.wait(30)
            return None
        self.left -= 1
        return self.inner.read()

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_a_read_that_never_returns_is_a_stall_not_a_frozen_worker(workers: List[CaptureWorker]) -> None:
    cam = camera(source={"loop": True}, stall_timeout_s=0.5, reconnect={"initial_s": 0.2, "max_s": 0.5})
    made: List[HangingReader] = []

    def factory() -> HangingReader:
        made.append(HangingReader(FileReader(cam.source), 5))  # type: ignore[arg-type]
        return made[-1]

    w = make_worker(cam, factory)
    workers.append(w)
    w.start()
    wait_for(lambda: w.status().reconnects >= 2, 10.0, "reopens after stalls")
    s = w.status()
    assert "no frame for" in (s.last_error or "")
    assert s.frames_read >= 10  # each reopen delivered frames again
    assert w.heartbeat_age < 1.0 and w.failure is None
    # the hung readers are abandoned, and close themselves once their call returns
    for r in made:
        r.release.set()
    wait_for(lambda: all(r.closed for r in made[:-1]), 5.0, "abandoned readers to close")
