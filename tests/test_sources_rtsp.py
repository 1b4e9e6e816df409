"""RTSP against a real gst-rtsp-server serving the 1080p clip: open, read, drop, freeze, come back."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from edgedet.errors import SourceError
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.runtime.slot import LatestSlot
from edgedet.sources import open_reader
from edgedet.sources.base import is_jetson, opencv_has_gstreamer
from edgedet.sources.capture import CaptureState, CaptureWorker
from edgedet.sources.config import CameraConfig, RtspSource
from edgedet.sources.rtsp import FFMPEG_OPTIONS_ENV, RtspReader
from edgedet.types import InputSpec, PreparedFrame
from tests.support.rtsp_server import RtspServer, free_port, unavailable_reason
from tests.support.waiting import wait_for

cv2 = pytest.importorskip("cv2")

SPEC = InputSpec(name="images", width=416, height=416)


@pytest.fixture
def rtsp_factory(video_1080p: Path, tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made: List[RtspServer] = []

    def make(**kw: Any) -> RtspServer:
        server = RtspServer(video_1080p, tmp_path / "rtsp", **kw).start()
        made.append(server)
        return server

    try:
        yield make
    finally:
        for s in made:
            if s.proc is not None and s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)  # a frozen server must be able to die
            s.kill()


def rtsp(url: str, **kw: Any) -> RtspSource:
    return RtspSource(type="rtsp", url=url, decoder="ffmpeg", **kw)


def release(frame: PreparedFrame) -> None:
    if callable(frame.release):
        frame.release()


def rtsp_worker(url: str, source: Dict[str, Any], **kw: Any) -> CaptureWorker:
    cam = CameraConfig.model_validate(
        {"name": "door", "source": {"type": "rtsp", "url": url, "decoder": "ffmpeg", **source}, **kw}
    )
    slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=release)
    return CaptureWorker(cam, lambda: open_reader(cam.source), CpuPreprocessor(SPEC), slot)


def test_rtsp_reader_reads_1080p_frames(rtsp_factory: Callable[..., RtspServer]) -> None:
    server = rtsp_factory()
    reader = RtspReader(RtspSource(type="rtsp", url=server.url))  # decoder: auto
    try:
        reader.open()
        if not (is_jetson() and opencv_has_gstreamer(cv2)):
            assert reader.decoder == "ffmpeg"
        assert reader.live and not reader.ended
        if reader.decoder == "ffmpeg":
            assert os.environ[FFMPEG_OPTIONS_ENV].endswith("rtsp_transport;tcp")
        assert reader.fps == pytest.approx(10.0)
        for _ in range(5):
            frame = reader.read()
            assert frame is not None and frame.shape == (1080, 1920, 3)
    finally:
        reader.close()


def test_rtsp_nothing_listening_is_a_clear_error() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        RtspReader(rtsp(f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=2.0)).open()
    assert str(err.value) == (
        f"RTSP rtsp://127.0.0.1:{port}/cam: connection refused by 127.0.0.1:{port} "
        "(camera offline or wrong port)"
    )
    assert time.monotonic() - start < 10.0


def test_rtsp_port_that_never_speaks_is_a_clear_error_in_bounded_time() -> None:
    with socket.socket() as silent:  # the kernel accepts the TCP connection; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"rtsp://user:pw@127.0.0.1:{port}/cam"
        start = time.monotonic()
        with pytest.raises(SourceError) as err:
            RtspReader(rtsp(url, open_timeout_s=2.0)).open()
        elapsed = time.monotonic() - start
    message = str(err.value)
    assert "accepts connections but delivered no video within 2 s" in message
    assert "pw" not in message and "user:***@" in message
    assert elapsed < 15.0


def test_worker_with_an_rtsp_camera_that_never_answers_fails_at_start() -> None:
    w = rtsp_worker(f"rtsp://127.0.0.1:{free_port()}/cam", {"open_timeout_s": 2.0})
    w.start()
    assert w.join(10)
    assert isinstance(w.failure, SourceError) and "connection refused" in str(w.failure)
    assert w.status().state == CaptureState.FAILED


@pytest.mark.slow
def test_camera_drops_and_comes_back_on_the_same_worker(rtsp_factory: Callable[..., RtspServer]) -> None:
    server = rtsp_factory()
    w = rtsp_worker(
        server.url,
        {"open_timeout_s": 3.0, "read_timeout_s": 3.0},
        stall_timeout_s=3.0,
        reconnect={"initial_s": 0.25, "multiplier": 2.0, "max_s": 1.0},
    )
    w.start()
    try:
        frame = w.slot.take(15.0)
        assert frame is not None, w.status()
        assert (frame.letterbox.source_width, frame.letterbox.source_height) == (1920, 1080)
        release(frame)
        assert w.status().state == CaptureState.STREAMING

        server.kill()
        wait_for(lambda: w.status().reconnects >= 1, 10.0, "the drop to be noticed")
        assert w.status().state in (CaptureState.STALLED, CaptureState.RECONNECTING)
        # watch the reopen attempts against the dead port: spaced by the backoff, never a busy loop
        attempts = [time.monotonic()]
        seen = w.status().reconnects
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            s = w.status()
            assert s.state in (CaptureState.STALLED, CaptureState.RECONNECTING), s
            assert w.heartbeat_age < 1.0 and w.failure is None
            if s.reconnects != seen:
                seen = s.reconnects
                attempts.append(time.monotonic())
            time.sleep(0.01)
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        assert 2 <= len(gaps) <= 8, gaps
        assert min(gaps) > 0.15, gaps  # backoff 0.25, 0.5, 1.0, 1.0 ...
        assert "connection refused" in (w.status().last_error or "")

        before = w.status().frames_prepared
        server.restart()
        wait_for(lambda: w.status().frames_prepared > before + 3, 20.0, "frames after the restart")
        s = w.status()
        assert s.state == CaptureState.STREAMING and w.failure is None and w.alive
        frame = w.slot.take(5.0)
        assert frame is not None and frame.letterbox.source_width == 1920
        release(frame)
    finally:
        w.stop()
        assert w.join(10)


@pytest.mark.slow
def test_frozen_stream_is_detected_as_a_stall(rtsp_factory: Callable[..., RtspServer]) -> None:
    server = rtsp_factory()
    w = rtsp_worker(
        server.url,
        {"open_timeout_s": 2.0, "read_timeout_s": 8.0},
        stall_timeout_s=1.0,
        reconnect={"initial_s": 0.25, "max_s": 0.5},
    )
    w.start()
    assert server.proc is not None
    try:
        wait_for(lambda: w.status().frames_prepared > 2, 15.0, "first frames")
        # the server freezes: the TCP connection stays up, no data comes, read() blocks inside FFmpeg
        os.kill(server.proc.pid, signal.SIGSTOP)
        wait_for(lambda: "no frame for" in (w.status().last_error or ""), 5.0, "the stall")
        assert w.status().state in (CaptureState.STALLED, CaptureState.RECONNECTING)
        time.sleep(1.0)
        assert w.heartbeat_age < 1.0 and w.failure is None  # the blocked read did not freeze the worker
        before = w.status().frames_prepared
        os.kill(server.proc.pid, signal.SIGCONT)
        wait_for(lambda: w.status().frames_prepared > before + 3, 20.0, "frames after the freeze")
        assert w.status().state == CaptureState.STREAMING
    finally:
        w.stop()
        assert w.join(15)
