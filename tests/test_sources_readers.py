"""Frame readers on real files, real device nodes and this machine's real OpenCV build."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP
from edgedet.errors import SourceError
from edgedet.sources import open_reader
from edgedet.sources.base import is_jetson, opencv_has_gstreamer, redact_url
from edgedet.sources.config import CsiSource, FileSource, GstreamerSource, RtspSource, V4l2Source
from edgedet.sources.csi import CsiReader, csi_pipeline
from edgedet.sources.file import FileReader
from edgedet.sources.gstreamer import GstreamerReader
from edgedet.sources.rtsp import RtspReader, gstreamer_pipeline, host_port
from edgedet.sources.v4l2 import V4l2Reader, device_path

cv2 = pytest.importorskip("cv2")


def file_reader(path: Path, **kw: Any) -> FileReader:
    args: Dict[str, Any] = {"type": "file", "path": str(path), **kw}
    return FileReader(FileSource(**args))


def test_file_once_reads_every_frame_then_ends() -> None:
    with file_reader(DEMO_CLIP, loop=False, pace="fast") as reader:
        assert reader.fps == pytest.approx(10.0)
        assert not reader.live
        frames = []
        while True:
            frame = reader.read()
            if frame is None:
                break
            frames.append(frame)
        assert reader.ended
        assert reader.read() is None  # stays ended
    assert len(frames) == 150
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[-1])


def test_file_loop_wraps_around_to_the_first_frame() -> None:
    with file_reader(DEMO_CLIP, loop=True, pace="fast") as reader:
        frames = [reader.read() for _ in range(153)]
        assert not reader.ended
    assert all(f is not None and f.shape == (480, 640, 3) for f in frames)
    first, wrapped = frames[0], frames[150]
    assert first is not None and wrapped is not None
    # the same frame decoded twice: identical up to decoder noise
    assert np.abs(first.astype(int) - wrapped.astype(int)).mean() < 1.0


def test_realtime_pacing_holds_frames_to_the_file_rate() -> None:
    with file_reader(DEMO_CLIP, pace="realtime") as reader:
        start = time.monotonic()
        for _ in range(6):
            assert reader.read() is not None
        paced = time.monotonic() - start
    with file_reader(DEMO_CLIP, pace="fast") as reader:
        start = time.monotonic()
        for _ in range(6):
            assert reader.read() is not None
        fast = time.monotonic() - start
    # sanity only: 6 frames at 10 fps span about 0.5 s; decoding them unpaced takes far less
    assert paced > 0.3
    assert fast < paced


def test_single_image_once_and_looped(tmp_path: Path) -> None:
    with file_reader(DEMO_CLIP, loop=False, pace="fast") as reader:
        original = reader.read()
    assert original is not None
    image_path = tmp_path / "still.png"
    assert cv2.imwrite(str(image_path), original)

    with file_reader(image_path, loop=False, pace="fast") as reader:
        assert reader.fps is None
        frame = reader.read()
        assert frame is not None and np.array_equal(frame, original)
        assert reader.read() is None and reader.ended

    with file_reader(image_path, loop=True, pace="fast") as reader:
        a = reader.read()
        assert a is not None
        a[:] = 0  # a consumer drawing on its frame must not change the next one
        b = reader.read()
        assert b is not None and np.array_equal(b, original)
        assert not reader.ended


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    reader = open_reader(FileSource(type="file", path=str(missing)))
    with pytest.raises(SourceError) as err:
        reader.open()
    assert str(err.value) == f"file {missing}: no such file"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("garbage.mp4", os.urandom(20000), "cannot open as a video"),
        ("empty.mp4", b"", "cannot open as a video"),
        ("broken.jpg", os.urandom(5000), "cannot decode the image"),
    ],
)
def test_unreadable_file_is_a_clear_error(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        file_reader(path).open()
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_truncated_video_is_refused_or_ends_cleanly(tmp_path: Path) -> None:
    data = DEMO_CLIP.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 3])
    reader = file_reader(path, loop=False, pace="fast")
    try:
        reader.open()
    except SourceError as exc:  # moov atom at the end: nothing to decode
        assert str(path) in str(exc)
        return
    try:
        count = 0
        while reader.read() is not None:
            count += 1
        assert 0 < count < 150 and reader.ended
    finally:
        reader.close()


def test_folder_and_unreadable_permissions(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a folder"):
        file_reader(tmp_path).open()
    if os.geteuid() == 0:
        return  # root reads everything; the permission check cannot be exercised here
    locked = tmp_path / "locked.mp4"
    shutil.copy(DEMO_CLIP, locked)
    locked.chmod(0)
    with pytest.raises(SourceError, match="permission denied"):
        file_reader(locked).open()


def test_read_before_open_is_an_error() -> None:
    with pytest.raises(SourceError, match="before open"):
        file_reader(DEMO_CLIP).read()


def test_camera_that_does_not_exist() -> None:
    for device in ("/dev/video99", 99, "99"):
        reader = open_reader(V4l2Source(type="v4l2", device=device))
        with pytest.raises(SourceError) as err:
            reader.open()
        assert str(err.value).startswith("camera /dev/video99: no such device")
        reader.close()


def test_device_node_that_is_not_a_camera() -> None:
    reader = V4l2Reader(V4l2Source(type="v4l2", device="/dev/null"))
    with pytest.raises(SourceError, match="cannot open as a V4L2 capture device"):
        reader.open()


def test_device_path_forms() -> None:
    assert device_path(0) == 0
    assert device_path("2") == 2
    assert device_path("/dev/video1") == "/dev/video1"


def test_gstreamer_detection_matches_the_build_information() -> None:
    info = cv2.getBuildInformation()
    line = next(ln for ln in info.splitlines() if ln.strip().startswith("GStreamer:"))
    assert opencv_has_gstreamer(cv2) == ("YES" in line.upper())


@pytest.mark.skipif(
    opencv_has_gstreamer(cv2), reason="this OpenCV has GStreamer; the missing-GStreamer error is moot"
)
def test_gstreamer_sources_without_gstreamer_are_a_clear_error() -> None:
    pipeline = GstreamerSource(type="gstreamer", pipeline="videotestsrc ! videoconvert ! appsink")
    with pytest.raises(SourceError) as err:
        GstreamerReader(pipeline).open()
    message = str(err.value)
    assert "has no GStreamer support" in message and cv2.__version__ in message and "\n" not in message

    rtsp = RtspSource(type="rtsp", url="rtsp://127.0.0.1:1/cam", decoder="gstreamer")
    with pytest.raises(SourceError, match="decoder: gstreamer needs OpenCV built with GStreamer"):
        RtspReader(rtsp).open()


def test_csi_off_jetson_is_a_clear_error() -> None:
    if is_jetson():
        pytest.skip("this is a Jetson")
    with pytest.raises(SourceError, match="only on an NVIDIA Jetson"):
        CsiReader(CsiSource(type="csi")).open()


def test_registry_picks_the_module_by_type() -> None:
    cases = [
        (FileSource(type="file", path="x.mp4"), FileReader),
        (V4l2Source(type="v4l2"), V4l2Reader),
        (RtspSource(type="rtsp", url="rtsp://h/x"), RtspReader),
        (GstreamerSource(type="gstreamer", pipeline="videotestsrc ! appsink"), GstreamerReader),
        (CsiSource(type="csi"), CsiReader),
    ]
    for cfg, cls in cases:
        assert type(open_reader(cfg)) is cls
    with pytest.raises(SourceError, match="unknown source type"):
        open_reader(object())


def test_pipelines_and_urls() -> None:
    cfg = RtspSource(type="rtsp", url="rtsp://admin:s3cret@10.0.0.5/stream1", codec="h265", latency_ms=100)
    jetson = gstreamer_pipeline(cfg, jetson=True)
    assert "rtph265depay ! h265parse ! nvv4l2decoder" in jetson and "latency=100 protocols=tcp" in jetson
    assert jetson.endswith("appsink drop=1 max-buffers=1 sync=false")
    assert "avdec_h265" in gstreamer_pipeline(cfg, jetson=False)
    assert "s3cret" not in RtspReader(cfg).description
    assert redact_url(jetson).count("admin:***@") == 1
    assert host_port(cfg.url) == ("10.0.0.5", 554)
    assert host_port("rtsp://cam.local:8554/x") == ("cam.local", 8554)
    csi = csi_pipeline(CsiSource(type="csi", sensor_id=1, width=1280, height=720, fps=60, flip_method=2))
    assert csi.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720")
    assert "framerate=60/1" in csi and "flip-method=2" in csi
