"""Calibration data for implicit INT8 builds (TensorRT 8.5-10): images or video frames, preprocessed
exactly like inference, streamed as fixed-size batches. Pure numpy/OpenCV; no TensorRT, no CUDA.

The calibrator (edgedet/backends/tensorrt/calibrator.py) pulls batches from ``CalibrationBatches`` one
at a time, so memory stays at one batch however many images are used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from edgedet.backends.tensorrt.cache import text_digest
from edgedet.errors import BackendError, SourceError, require
from edgedet.preprocess.base import Preprocessor
from edgedet.sources.sampling import iter_video_samples
from edgedet.types import InputSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".ts", ".h264", ".h265")


def list_images(folder: Path) -> List[Path]:
    """Image files directly in ``folder``, sorted by name (a stable order gives a stable cache key)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_source(source: Path) -> None:
    if not source.exists():
        raise BackendError(f"calibration data {source} does not exist (an image folder or a video file)")
    if source.is_dir():
        if not list_images(source):
            raise BackendError(f"calibration folder {source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    elif source.suffix.lower() not in VIDEO_SUFFIXES and source.suffix.lower() not in IMAGE_SUFFIXES:
        raise BackendError(
            f"calibration data {source} is neither an image folder nor a video file "
            f"({', '.join(VIDEO_SUFFIXES)})"
        )


def source_id(source: Path, limit: int) -> str:
    """A digest identifying the calibration data: file names, sizes and mtimes, and the count used."""
    source = Path(source)
    _check_source(source)
    if source.is_dir():
        files = list_images(source)[:limit]
        entries: List[Tuple[str, int, int]] = []
        for f in files:
            st = f.stat()
            entries.append((f.name, st.st_size, int(st.st_mtime)))
        return text_digest("images", entries, limit)
    st = source.stat()
    return text_digest("video", source.name, st.st_size, int(st.st_mtime), limit)


def spec_id(spec: InputSpec) -> str:
    """A digest of the preprocessing: calibration scales are only valid for the same input transform."""
    return text_digest(
        spec.width,
        spec.height,
        spec.channel_order.value,
        spec.scale,
        list(spec.mean),
        list(spec.std),
        spec.pad_value,
        spec.center,
        spec.dtype,
    )


def iter_frames(source: Path, limit: int) -> Iterator[np.ndarray]:
    """Up to ``limit`` BGR uint8 images: files of a folder in name order (unreadable ones skipped with a
    warning), or frames sampled evenly across a video."""
    source = Path(source)
    _check_source(source)
    if limit < 1:
        raise BackendError("the number of calibration images must be at least 1")
    cv2: Any = require("cv2", "cv", "INT8 calibration (reading images)")
    if source.is_dir():
        yield from _iter_folder(cv2, source, limit)
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise BackendError(f"cannot read calibration image {source}")
        yield image
    else:
        yield from _iter_video(cv2, source, limit)


def _iter_folder(cv2: Any, folder: Path, limit: int) -> Iterator[np.ndarray]:
    produced = skipped = 0
    for path in list_images(folder):
        if produced >= limit:
            break
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or image.ndim != 3 or image.shape[0] < 2 or image.shape[1] < 2:
            skipped += 1
            log.warning("calibration: skipping unreadable image %s", path)
            continue
        produced += 1
        yield image
    if produced == 0:
        raise BackendError(f"none of the images in {folder} could be read ({skipped} unreadable)")


def _iter_video(cv2: Any, path: Path, limit: int) -> Iterator[np.ndarray]:
    produced = 0
    try:
        for _, frame in iter_video_samples(path, limit):
            produced += 1
            yield frame
    except SourceError as exc:
        raise BackendError(f"calibration video: {exc}") from exc
    if produced == 0:
        raise BackendError(f"calibration video {path} yielded no frames")


class CalibrationBatches:
    """Preprocessed frames grouped into contiguous (batch, 3, H, W) arrays.

    An incomplete last batch is dropped (TensorRT's calibrator needs full batches); fewer frames than one
    batch is an error. ``count`` is the number of frames used so far.
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        preprocessor: Preprocessor,
        batch_size: int,
        dtype: str = "float32",
        on_batch: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._frames = iter(frames)
        self._pre = preprocessor
        self.batch_size = batch_size
        spec = preprocessor.spec
        self.shape = (batch_size, 3, spec.height, spec.width)
        self._batch = np.empty(self.shape, dtype=np.dtype(dtype))
        self._item = preprocessor.allocate()
        self.count = 0
        self.batches = 0
        self._on_batch = on_batch

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        filled = 0
        for image in self._frames:
            self._pre.run(image, self._item)
            self._batch[filled] = np.asarray(self._item)[0]
            filled += 1
            if filled == self.batch_size:
                break
        if filled < self.batch_size:
            if self.batches == 0:
                raise BackendError(
                    f"INT8 calibration needs at least {self.batch_size} images (one batch); got {filled}"
                )
            if filled:
                log.info("calibration: dropping the last %d frame(s) (incomplete batch)", filled)
            raise StopIteration
        self.count += filled
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(self.batches, self.count)
        return self._batch


def describe_source(source: Path) -> str:
    source = Path(source)
    if source.is_dir():
        return f"{len(list_images(source))} images in {source}"
    return f"frames of {os.path.basename(str(source))}"
