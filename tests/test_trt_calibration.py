"""INT8 calibration data: images or video frames, preprocessed like inference, streamed in batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgedet.errors import BackendError
from edgedet.preprocess.calibration_data import (
    CalibrationBatches,
    iter_frames,
    list_images,
    source_id,
    spec_id,
)
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.sources.sampling import sample_indices
from edgedet.types import ChannelOrder, InputSpec

pytest.importorskip("cv2")
CLIP = Path(__file__).resolve().parent.parent / "edgedet" / "assets" / "demo_street.mp4"
SPEC = InputSpec(name="images", width=416, height=416)  # YOLOX: BGR 0..255, top-left, pad 114


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
        iter_frames(calib_dir, 10), pre, batch_size=4, on_batch=lambda n, c: seen.append((n, c))
    )
    out = [b.copy() for b in batches]
    assert len(out) == 2 and batches.count == 8  # the last 2 images do not fill a batch
    assert out[0].shape == (4, 3, 416, 416) and out[0].dtype == np.float32 and out[0].flags.c_contiguous
    assert seen == [(1, 4), (2, 8)]
    import cv2

    first = cv2.imread(str(list_images(calib_dir)[0]))
    assert first is not None
    ref = pre.allocate()
    pre.run(first, ref)
    assert np.array_equal(out[0][0], ref[0])
    assert out[0].min() >= 0 and out[0].max() <= 255


def test_video_frames_are_sampled_across_the_clip() -> None:
    frames = list(iter_frames(CLIP, 15))
    assert len(frames) == 15 and frames[0].shape == (480, 640, 3)
    assert not np.array_equal(frames[0], frames[-1])  # spread out, not the first 15 frames in a row
    assert sample_indices(150, 15) == list(range(0, 150, 10))
    assert sample_indices(5, 15) == [0, 1, 2, 3, 4]
    spec = InputSpec(
        name="images", width=320, height=320, channel_order=ChannelOrder.RGB, scale=1 / 255, dtype="float16"
    )
    batches = list(CalibrationBatches(iter(frames), CpuPreprocessor(spec), batch_size=5, dtype="float16"))
    assert len(batches) == 3 and batches[0].dtype == np.float16 and float(batches[0].max()) <= 1.0


def test_unreadable_images_are_skipped_and_all_bad_is_an_error(calib_dir: Path, tmp_path: Path) -> None:
    (calib_dir / "000-broken.jpg").write_bytes(b"not a jpeg")
    frames = list(iter_frames(calib_dir, 3))
    assert len(frames) == 3
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8garbage")
    (bad / "b.png").write_bytes(b"")
    with pytest.raises(BackendError, match="none of the images"):
        list(iter_frames(bad, 5))


def test_bad_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(BackendError, match="holds no images"):
        list(iter_frames(empty, 5))
    with pytest.raises(BackendError, match="does not exist"):
        list(iter_frames(tmp_path / "missing", 5))
    other = tmp_path / "data.csv"
    other.write_text("1,2")
    with pytest.raises(BackendError, match="neither an image folder nor a video"):
        source_id(other, 5)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(BackendError, match="calibration video"):
        list(iter_frames(broken, 5))


def test_too_few_images_for_one_batch(calib_dir: Path) -> None:
    with pytest.raises(BackendError, match="at least 8 images"):
        list(CalibrationBatches(iter_frames(calib_dir, 3), CpuPreprocessor(SPEC), batch_size=8))


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
