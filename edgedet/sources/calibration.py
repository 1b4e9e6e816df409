"""Calibration frames: the one reader of INT8 calibration data, for the TensorRT calibrator and for
``edgedet quantize``/``search``/``compare`` (edgedet/precision/calibration.py).

A source is an image folder (the first ``limit`` images by name), one image, a video file (``limit``
frames spread over it), or a live source (an RTSP URL, a /dev/video device, or a source config object,
sampled every ``interval_s``). Frames come one at a time as (origin, BGR image), so a consumer may keep
only one batch in memory. Bad images (undecodable, or smaller than MIN_SIDE on a side) are an error
naming all of them, or, with ``skip_bad``, warnings; no usable frame at all is always an error. Every
problem is a SourceError with a one-line message; each consumer reports it as its own error kind.
Preprocessing is the consumer's (edgedet/preprocess/calibration_data.py batches them).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgedet.errors import EdgedetError, SourceError, require
from edgedet.sources.config import RtspSource, V4l2Source
from edgedet.sources.registry import open_reader
from edgedet.sources.sampling import iter_video_samples
from edgedet.sources.suffixes import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image, is_video

log = logging.getLogger(__name__)

# smaller images carry too little content to say anything about activation ranges after upscaling
MIN_SIDE = 32
TENSOR_SUFFIX = ".npy"  # preprocessed tensors: read by the precision tools, not frames
_SHOWN = 5  # file names quoted in an error message

Source = Union[str, Path, Any]  # a path, a URL / device string, or a source config object
Frame = Tuple[str, np.ndarray]  # (origin, BGR uint8 image)


def listing(folder: Path) -> List[Path]:
    """The visible files of ``folder`` by name (a stable order gives a stable cache key)."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise SourceError(f"cannot list calibration folder {folder}: {exc}") from exc


def list_images(folder: Path) -> List[Path]:
    return [p for p in listing(folder) if is_image(p)]


def quote_names(paths: Sequence[Any]) -> str:
    shown = [getattr(p, "name", str(p)) for p in paths[:_SHOWN]]
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(shown) + more


def live_config(source: Source) -> Any:
    """A source config for live sources (URL, /dev/video device, or config object); None otherwise."""
    if hasattr(source, "type") and not isinstance(source, (str, Path)):
        return source
    text = str(source)
    if text.startswith(("rtsp://", "rtsps://")):
        return RtspSource(type="rtsp", url=text)
    if text.startswith("/dev/video"):
        return V4l2Source(type="v4l2", device=text)
    return None


def check_source(source: Path) -> None:
    """SourceError unless ``source`` is an image folder, an image or a video file."""
    if not source.exists():
        raise SourceError(
            f"calibration data {source} does not exist (an image folder, a video file or a live source)"
        )
    if source.is_dir():
        files = listing(source)
        if not files:
            raise SourceError(f"calibration folder {source} is empty")
        if not any(is_image(p) or p.suffix.lower() == TENSOR_SUFFIX for p in files):
            raise SourceError(
                f"calibration folder {source} holds no images ({' '.join(IMAGE_SUFFIXES)}) or .npy tensors; "
                f"it has {len(files)} other file(s): {quote_names(files)}"
            )
    elif not is_image(source) and not is_video(source):
        raise SourceError(
            f"calibration data {source} is neither an image folder, an image nor a video file "
            f"(video suffixes: {', '.join(VIDEO_SUFFIXES)})"
        )


def iter_calibration_frames(
    source: Source,
    limit: int,
    *,
    skip_bad: bool = False,
    skipped: Optional[List[str]] = None,
    interval_s: float = 0.5,
    timeout_s: float = 60.0,
) -> Iterator[Frame]:
    """Up to ``limit`` calibration frames from ``source`` (see the module doc); the images ``skip_bad``
    left out are appended to ``skipped``."""
    if limit < 1:
        raise SourceError("the number of calibration images must be at least 1")
    live = live_config(source)
    if live is not None:
        yield from _live_frames(live, limit, interval_s, timeout_s)
        return
    path = Path(source).expanduser()
    check_source(path)
    if path.is_dir():
        images = list_images(path)
        if not images:
            return  # a folder of .npy tensors: the precision tools read those themselves
        if len(images) > limit:
            log.info("calibration: using the first %d of %d images in %s", limit, len(images), path)
        yield from _read_images(images[:limit], skip_bad, skipped)
    elif is_image(path):
        yield from _read_images([path], skip_bad, skipped)
    else:
        yield from _video_frames(path, limit)


def _read_images(paths: Sequence[Path], skip_bad: bool, skipped: Optional[List[str]]) -> Iterator[Frame]:
    cv2: Any = require("cv2", "cv", "calibration (reading images)")
    unreadable: List[Path] = []
    small: List[str] = []
    good = 0
    for p in paths:
        try:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        except cv2.error:  # some corrupt files raise instead of returning None
            image = None
        if image is None or image.ndim != 3:
            unreadable.append(p)
        elif min(image.shape[:2]) < MIN_SIDE:
            small.append(f"{p.name} ({image.shape[1]}x{image.shape[0]})")
        else:
            good += 1
            yield p.name, image
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} file(s) cannot be decoded as images: {quote_names(unreadable)}")
    if small:
        problems.append(f"{len(small)} image(s) smaller than {MIN_SIDE} px on a side: {quote_names(small)}")
    if problems and (not skip_bad or not good):
        hint = "" if good or not skip_bad else " (no usable image left)"
        raise SourceError(f"bad calibration data in {paths[0].parent}{hint}: " + "; ".join(problems))
    for line in problems:
        log.warning("calibration: skipping %s", line)
    if skipped is not None:
        skipped.extend([p.name for p in unreadable] + small)


def _video_frames(path: Path, limit: int) -> Iterator[Frame]:
    produced = 0
    try:
        for index, frame in iter_video_samples(path, limit):
            if produced == 0 and min(frame.shape[:2]) < MIN_SIDE:
                raise SourceError(f"calibration video {path} is smaller than {MIN_SIDE} px on a side")
            produced += 1
            yield f"{path.name}#{index}", frame
    except SourceError as exc:
        raise SourceError(f"calibration video: {exc}") from exc
    if produced == 0:
        raise SourceError(f"calibration video {path} yielded no frames")


def _live_frames(cfg: Any, limit: int, interval_s: float, timeout_s: float) -> Iterator[Frame]:
    reader = open_reader(cfg)
    taken = 0
    try:
        try:
            reader.open()
        except EdgedetError as exc:
            raise SourceError(f"cannot open the calibration source: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        next_take = 0.0
        while taken < limit and time.monotonic() < deadline:
            frame = reader.read()
            if frame is None:
                if getattr(reader, "ended", False):
                    break
                time.sleep(0.05)
                continue
            now = time.monotonic()
            if now >= next_take:
                yield f"{reader.description}#{taken}", frame
                taken += 1
                next_take = now + interval_s
    finally:
        reader.close()
    if not taken:
        raise SourceError(
            f"the calibration source {reader.description} delivered no frame in {timeout_s:g} s"
        )
    if taken < limit:
        log.warning("calibration: only %d of %d frames arrived in %.0f s", taken, limit, timeout_s)


def describe_source(source: Source, limit: Optional[int] = None) -> str:
    live = live_config(source)
    if live is not None:
        return f"frames from {getattr(live, 'url', None) or live.type} source"
    path = Path(source)
    if path.is_dir():
        count = len(list_images(path))
        return f"{min(count, limit) if limit else count} images in {path}"
    return f"frames of {path.name}"
