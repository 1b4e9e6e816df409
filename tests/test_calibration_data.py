"""INT8 calibration data, read by the one reader (edgedet/sources/calibration.py) for both the precision
tools and the TensorRT calibrator: image folders, .npy tensors, video frames, live sources, every kind of
bad input; preprocessed like inference, whole (load_calibration) or streamed in batches (TensorRT)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator, List

import cv2
import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.backends.tensorrt.request import source_id, spec_id
from edgedet.errors import BackendError, EdgedetError, SourceError
from edgedet.precision.calibration import CalibrationSet, load_calibration, model_input_spec
from edgedet.precision.errors import CalibrationError
from edgedet.preprocess.calibration_data import CalibrationBatches
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.sources.calibration import iter_calibration_frames, list_images
from edgedet.sources.sampling import sample_indices
from edgedet.types import ChannelOrder, InputSpec

CLIP = DEMO_CLIP
SPEC = InputSpec(name="images", width=416, height=416)  # YOLOX: BGR 0..255, top-left, pad 114


def _images(source: Path, limit: int) -> Iterator[np.ndarray]:
    return (image for _, image in iter_calibration_frames(source, limit, skip_bad=True))


@pytest.fixture(scope="module")
def spec() -> InputSpec:
    return model_input_spec(DEMO_MODEL)


def _frames(n: int) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    out: List[np.ndarray] = []
    while len(out) < n:
        ok, frame = cap.read()
        assert ok
        out.append(frame)
    cap.release()
    return out


def test_spec_follows_the_model(spec: InputSpec) -> None:
    assert (spec.name, spec.width, spec.height) == ("images", 416, 416)
    assert spec.scale == 1.0 and spec.channel_order.value == "bgr"


def test_image_folder(tmp_path: Path, spec: InputSpec) -> None:
    for i, frame in enumerate(_frames(3)):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), frame)
    (tmp_path / "notes.txt").write_text("not an image")
    calib = load_calibration(tmp_path, DEMO_MODEL, spec=spec)
    assert isinstance(calib, CalibrationSet) and len(calib) == 3
    assert calib.origins == ["f0.jpg", "f1.jpg", "f2.jpg"]
    t = calib.tensors[0]
    assert t.shape == (1, 3, 416, 416) and t.dtype == np.float32
    # YOLOX: raw 0..255 values, padding 114 below the 640x480 picture scaled to 416x312
    assert t.min() >= 0.0 and t.max() <= 255.0
    assert np.all(t[0, :, 320:, :] == 114.0)
    feed = next(calib.data_reader().get_next().items().__iter__())
    assert feed[0] == "images"


def test_limit_takes_first_images_by_name(tmp_path: Path, spec: InputSpec) -> None:
    frame = _frames(1)[0]
    for name in ("c.png", "a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), frame)
    calib = load_calibration(tmp_path, DEMO_MODEL, spec=spec, limit=2)
    assert calib.origins == ["a.png", "b.png"]


def test_video_frames_are_spread_over_the_clip(spec: InputSpec) -> None:
    calib = load_calibration(DEMO_CLIP, DEMO_MODEL, spec=spec, limit=5)
    assert len(calib) == 5
    indices = [int(o.split("#")[1]) for o in calib.origins]
    assert indices == [0, 30, 60, 90, 120]  # 150 frames, 5 wanted
    assert not np.array_equal(calib.tensors[0], calib.tensors[-1])


def test_calibration_path_that_does_not_exist_is_a_calibration_error(tmp_path: Path, spec: InputSpec) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nope", DEMO_MODEL, spec=spec)


def test_empty_calibration_folder_is_a_calibration_error_saying_empty(
    tmp_path: Path, spec: InputSpec
) -> None:
    with pytest.raises(CalibrationError, match="is empty"):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)


def test_folder_without_images(tmp_path: Path, spec: InputSpec) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "labels.csv").write_text("a,b")
    with pytest.raises(
        CalibrationError, match=r"holds no images .* 2 other file\(s\): labels.csv, readme.txt"
    ):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)


def test_unreadable_images_are_named(tmp_path: Path, spec: InputSpec) -> None:
    cv2.imwrite(str(tmp_path / "good.jpg"), _frames(1)[0])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "text.png").write_text("plain text with an image suffix")
    with pytest.raises(
        CalibrationError, match=r"2 file\(s\) cannot be decoded as images: broken.jpg, text.png"
    ):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)
    # asked to skip them, the good image is used and the skipped ones are reported
    calib = load_calibration(tmp_path, DEMO_MODEL, spec=spec, skip_bad=True)
    assert calib.origins == ["good.jpg"] and calib.skipped == ["broken.jpg", "text.png"]


def test_only_bad_images_fail_even_when_skipping(tmp_path: Path, spec: InputSpec) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="no usable image left"):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec, skip_bad=True)


def test_too_small_images(tmp_path: Path, spec: InputSpec) -> None:
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((8, 12, 3), 200, np.uint8))
    with pytest.raises(CalibrationError, match=r"smaller than 32 px on a side: tiny.png \(12x8\)"):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)


def test_npy_tensors_of_the_wrong_size(tmp_path: Path, spec: InputSpec) -> None:
    np.save(tmp_path / "ok.npy", np.zeros((1, 3, 416, 416), np.float32))
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 320, 320), np.float32))
    with pytest.raises(
        CalibrationError, match=r"do not fit the model input 'images'.*small.npy \(shape \(1, 3, 320, 320\)"
    ):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)


def test_npy_tensors(tmp_path: Path, spec: InputSpec) -> None:
    np.save(tmp_path / "a.npy", np.full((3, 416, 416), 7.0, np.float64))
    calib = load_calibration(tmp_path, DEMO_MODEL, spec=spec)
    assert len(calib) == 1 and calib.tensors[0].shape == (1, 3, 416, 416)
    assert calib.tensors[0].dtype == np.float32 and float(calib.tensors[0].max()) == 7.0


def test_npy_mixed_with_images(tmp_path: Path, spec: InputSpec) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 416, 416), np.float32))
    cv2.imwrite(str(tmp_path / "b.jpg"), _frames(1)[0])
    with pytest.raises(CalibrationError, match=r"mixes images and \.npy"):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec)


def test_corrupt_video(tmp_path: Path, spec: InputSpec) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x01 not a video at all" * 100)
    with pytest.raises(CalibrationError, match=r"clip\.mp4"):
        load_calibration(bad, DEMO_MODEL, spec=spec)


def test_unknown_file_kind(tmp_path: Path, spec: InputSpec) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"1234")
    with pytest.raises(CalibrationError, match="neither an image folder"):
        load_calibration(f, DEMO_MODEL, spec=spec)


def test_unreachable_live_source(spec: InputSpec) -> None:
    # nothing listens on port 9 of localhost: the live source fails to open, as a CalibrationError
    with pytest.raises(EdgedetError):
        load_calibration("rtsp://127.0.0.1:9/none", DEMO_MODEL, spec=spec, limit=2, timeout_s=5)


def test_limit_must_be_positive(tmp_path: Path, spec: InputSpec) -> None:
    with pytest.raises(CalibrationError, match="at least 1"):
        load_calibration(tmp_path, DEMO_MODEL, spec=spec, limit=0)


def test_frames_from_a_source_config(spec: InputSpec) -> None:
    # the live-source path, driven through edgedet.sources with a file source played as a stream
    from edgedet.sources.config import FileSource

    cfg = FileSource(type="file", path=str(DEMO_CLIP), loop=False, pace="fast")
    calib = load_calibration(cfg, DEMO_MODEL, spec=spec, limit=3, interval_s=0.0, timeout_s=20)
    assert len(calib) == 3 and calib.tensors[0].shape == (1, 3, 416, 416)
    assert all("demo_street.mp4" in o for o in calib.origins)


@pytest.fixture
def calib_dir(shared_dir: Path, tmp_path: Path) -> Path:
    """Ten real COCO calibration images (copied, so a test may add or break files)."""
    folder = tmp_path / "calib"
    folder.mkdir()
    for src in sorted((shared_dir / "data" / "coco-val2017-calib").glob("*.jpg"))[:10]:
        shutil.copy(src, folder / src.name)
    return folder


def test_folder_batches_equal_the_inference_preprocessing(calib_dir: Path) -> None:
    pre = CpuPreprocessor(SPEC)
    seen = []
    batches = CalibrationBatches(
        _images(calib_dir, 10), pre, batch_size=4, on_batch=lambda n, c: seen.append((n, c))
    )
    out = [b.copy() for b in batches]
    assert len(out) == 2 and batches.count == 8  # the last 2 images do not fill a batch
    assert out[0].shape == (4, 3, 416, 416) and out[0].dtype == np.float32 and out[0].flags.c_contiguous
    assert seen == [(1, 4), (2, 8)]
    first = cv2.imread(str(list_images(calib_dir)[0]))
    assert first is not None
    ref = pre.allocate()
    pre.run(first, ref)
    assert np.array_equal(out[0][0], ref[0])
    assert out[0].min() >= 0 and out[0].max() <= 255


def test_video_frames_are_sampled_across_the_clip() -> None:
    frames = list(_images(CLIP, 15))
    assert len(frames) == 15 and frames[0].shape == (480, 640, 3)
    assert not np.array_equal(frames[0], frames[-1])  # spread out, not the first 15 frames in a row
    assert sample_indices(150, 15) == list(range(0, 150, 10))
    assert sample_indices(5, 15) == [0, 1, 2, 3, 4]
    spec = InputSpec(
        name="images", width=320, height=320, channel_order=ChannelOrder.RGB, scale=1 / 255, dtype="float16"
    )
    batches = list(CalibrationBatches(iter(frames), CpuPreprocessor(spec), batch_size=5, dtype="float16"))
    assert len(batches) == 3 and batches[0].dtype == np.float16 and float(batches[0].max()) <= 1.0


def test_skipped_images_are_reported_and_all_bad_is_an_error(calib_dir: Path, tmp_path: Path) -> None:
    (calib_dir / "000-broken.jpg").write_bytes(b"not a jpeg")
    skipped: List[str] = []
    frames = list(iter_calibration_frames(calib_dir, 3, skip_bad=True, skipped=skipped))
    assert len(frames) == 2 and skipped == ["000-broken.jpg"]  # the first 3 files by name
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8garbage")
    (bad / "b.png").write_bytes(b"")
    with pytest.raises(SourceError, match="no usable image left"):
        list(iter_calibration_frames(bad, 5, skip_bad=True))


def test_the_engine_key_of_unusable_calibration_data_is_a_backend_error(tmp_path: Path) -> None:
    other = tmp_path / "data.csv"
    other.write_text("1,2")
    with pytest.raises(BackendError, match="neither an image folder, an image nor a video"):
        source_id(other, 5)
    with pytest.raises(BackendError, match="does not exist"):
        source_id(tmp_path / "missing", 5)


def test_too_few_images_for_one_batch(calib_dir: Path) -> None:
    with pytest.raises(BackendError, match="at least 8 images"):
        list(CalibrationBatches(_images(calib_dir, 3), CpuPreprocessor(SPEC), batch_size=8))


def test_ids_change_with_the_data_and_the_preprocessing(calib_dir: Path) -> None:
    a = source_id(calib_dir, 10)
    assert a == source_id(calib_dir, 10)
    assert a != source_id(calib_dir, 5)
    first = list_images(calib_dir)[0]
    first.write_bytes(first.read_bytes() + b"\x00")
    assert source_id(calib_dir, 10) != a
    assert source_id(CLIP, 10) != source_id(CLIP, 20)
    assert spec_id(SPEC) == spec_id(InputSpec(name="other", width=416, height=416))
    assert spec_id(SPEC) != spec_id(
        InputSpec(name="images", width=416, height=416, channel_order=ChannelOrder.RGB)
    )
