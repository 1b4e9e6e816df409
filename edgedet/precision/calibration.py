"""Calibration data for INT8 quantization: model-input tensors made from images, video or a live source.

Sources, picked from what ``source`` is:

- an image folder (``.jpg .jpeg .png .bmp .webp .tif .tiff``, name order), or a folder of ``.npy`` tensors
  already preprocessed to the model's input shape;
- a video file: ``limit`` frames sampled evenly over the whole file;
- a live source: an ``rtsp://`` URL, a ``/dev/videoN`` device, or any source config object of
  ``edgedet.sources.config`` (opened through ``edgedet.sources.registry``); one frame is taken every
  ``interval_s`` seconds so the set covers some time, not one instant.

Images go through the same CPU preprocessing as inference (``edgedet.preprocess.cpu``), with the
model family's conventions, so the ranges measured are the ranges the deployed model sees. Every bad input
is a ``CalibrationError`` that names the files at fault; nothing is silently skipped unless ``skip_bad``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.errors import EdgedetError, SourceError, require
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import build_postprocessor, input_spec_for
from edgedet.precision.errors import CalibrationError
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.sources.config import RtspSource, V4l2Source
from edgedet.sources.registry import open_reader
from edgedet.sources.sampling import iter_video_samples
from edgedet.sources.suffixes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from edgedet.types import InputSpec

log = logging.getLogger(__name__)

TENSOR_SUFFIX = ".npy"
# smaller images carry too little content to say anything about activation ranges after upscaling
MIN_SIDE = 32
_SHOWN = 5  # file names quoted in an error message

Source = Union[str, Path, Any]  # a path, a URL / device string, or a source config object


@dataclass
class CalibrationSet:
    """Preprocessed model inputs, one (1, C, H, W) array per image, and where each came from."""

    input_name: str
    tensors: List[np.ndarray]
    origins: List[str]
    description: str
    spec: Optional[InputSpec] = None
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tensors)

    def feeds(self) -> Iterator[dict]:
        for t in self.tensors:
            yield {self.input_name: t}

    def data_reader(self) -> Any:
        """An ``onnxruntime.quantization.CalibrationDataReader`` over these tensors (for ORT calibrators)."""
        quant: Any = require("onnxruntime.quantization", "quantize", "INT8 calibration")
        tensors, name = self.tensors, self.input_name

        class _Reader(quant.CalibrationDataReader):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                self._iter = iter(tensors)

            def get_next(self) -> Optional[dict]:
                item = next(self._iter, None)
                return None if item is None else {name: item}

            def rewind(self) -> None:
                self._iter = iter(tensors)

        return _Reader()


def model_input_spec(model_path: Union[str, Path], model_cfg: Any = None) -> InputSpec:
    """The preprocessing ``model_path`` needs (size, colour order, scaling), as inference would use it."""

    cfg = model_cfg or ModelConfig(path=str(model_path))
    backend = OnnxRuntimeBackend(model_path, threads=1)
    try:
        post = build_postprocessor(cfg, backend)
        return input_spec_for(cfg, backend, post.family)
    finally:
        backend.close()


def load_calibration(
    source: Source,
    model_path: Union[str, Path],
    *,
    limit: int = 128,
    model_cfg: Any = None,
    spec: Optional[InputSpec] = None,
    skip_bad: bool = False,
    interval_s: float = 0.5,
    timeout_s: float = 60.0,
) -> CalibrationSet:
    """Read up to ``limit`` calibration inputs from ``source`` and preprocess them for ``model_path``.

    ``spec`` skips opening the model to find its preprocessing. ``skip_bad`` turns unreadable or tiny
    images into warnings instead of an error (at least one usable image is still required).
    """
    if limit < 1:
        raise CalibrationError("the number of calibration images must be at least 1")
    if spec is None:
        spec = model_input_spec(model_path, model_cfg)
    frames: List[Tuple[str, np.ndarray]]
    skipped: List[str] = []
    live_cfg = _live_config(source)
    if live_cfg is not None:
        frames = _live_frames(live_cfg, limit, interval_s, timeout_s)
        description = f"{len(frames)} frames from {getattr(live_cfg, 'url', None) or live_cfg.type} source"
    else:
        path = Path(os.path.expanduser(str(source)))
        if not path.exists():
            raise CalibrationError(
                f"calibration data {path} does not exist (an image folder, a video file or a live source)"
            )
        if path.is_dir():
            tensors = _npy_folder(path, limit, spec)
            if tensors is not None:
                names, arrays = tensors
                return CalibrationSet(spec.name, arrays, names, f"{len(arrays)} tensors from {path}", spec)
            frames, skipped = _image_folder(path, limit, skip_bad)
            description = f"{len(frames)} images from {path}"
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            frames, skipped = _read_images([path], skip_bad)
            description = f"image {path}"
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            frames = sample_video_frames(path, limit)
            description = f"{len(frames)} frames sampled from {path}"
        else:
            raise CalibrationError(
                f"calibration data {path} is neither an image folder, an image nor a video file "
                f"(video suffixes: {', '.join(VIDEO_SUFFIXES)})"
            )
    tensors_list = _preprocess([f for _, f in frames], spec)
    log.info("calibration: %s", description)
    return CalibrationSet(spec.name, tensors_list, [n for n, _ in frames], description, spec, skipped)


# -- image folders ---------------------------------------------------------------------------------


def _listing(folder: Path) -> List[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise CalibrationError(f"cannot list calibration folder {folder}: {exc}") from exc


def _names(paths: Sequence[Any]) -> str:
    shown = [getattr(p, "name", str(p)) for p in paths[:_SHOWN]]
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(shown) + more


def _image_folder(folder: Path, limit: int, skip_bad: bool) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    files = _listing(folder)
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        if not files:
            raise CalibrationError(f"calibration folder {folder} is empty")
        raise CalibrationError(
            f"calibration folder {folder} holds no images ({' '.join(IMAGE_SUFFIXES)}) or .npy tensors; "
            f"it has {len(files)} other file(s): {_names(files)}"
        )
    if len(images) > limit:
        log.info("calibration: using the first %d of %d images in %s", limit, len(images), folder)
    return _read_images(images[:limit], skip_bad)


def _read_images(paths: Sequence[Path], skip_bad: bool) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    cv2: Any = require("cv2", "cv", "calibration (reading images)")
    good: List[Tuple[str, np.ndarray]] = []
    unreadable: List[Path] = []
    small: List[str] = []
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
            good.append((p.name, image))
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} file(s) cannot be decoded as images: {_names(unreadable)}")
    if small:
        problems.append(f"{len(small)} image(s) smaller than {MIN_SIDE} px on a side: {_names(small)}")
    skipped = [p.name for p in unreadable] + small
    if problems and (not skip_bad or not good):
        folder = paths[0].parent if paths else ""
        hint = "" if good or not skip_bad else " (no usable image left)"
        raise CalibrationError(f"bad calibration data in {folder}{hint}: " + "; ".join(problems))
    for line in problems:
        log.warning("calibration: skipping %s", line)
    return good, skipped


def _npy_folder(folder: Path, limit: int, spec: InputSpec) -> Optional[Tuple[List[str], List[np.ndarray]]]:
    """Preprocessed .npy tensors in ``folder``, checked against the model input; None if there are none."""
    files = _listing(folder)
    npys = [p for p in files if p.suffix.lower() == TENSOR_SUFFIX]
    if not npys:
        return None
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        raise CalibrationError(f"calibration folder {folder} mixes images and .npy tensors; use one kind")
    want = (1, 3, spec.height, spec.width)
    names: List[str] = []
    arrays: List[np.ndarray] = []
    bad: List[str] = []
    for p in npys[:limit]:
        try:
            arr = np.load(str(p), allow_pickle=False)
        except (OSError, ValueError) as exc:
            bad.append(f"{p.name} (unreadable: {exc})")
            continue
        if arr.ndim == 3:
            arr = arr[None]
        if tuple(arr.shape) != want or arr.dtype.kind != "f":
            bad.append(f"{p.name} (shape {tuple(arr.shape)} {arr.dtype})")
            continue
        names.append(p.name)
        arrays.append(np.ascontiguousarray(arr, dtype=np.dtype(spec.dtype)))
    if bad:
        raise CalibrationError(
            f"{len(bad)} tensor file(s) in {folder} do not fit the model input '{spec.name}' "
            f"{want} float: {_names(bad)}"
        )
    return names, arrays


# -- video files and live sources ----------------------------------------------------------------------


def sample_video_frames(path: Path, limit: int) -> List[Tuple[str, np.ndarray]]:
    try:
        frames = [(f"{path.name}#{i}", frame) for i, frame in iter_video_samples(path, limit)]
    except SourceError as exc:
        raise CalibrationError(f"calibration video: {exc}") from exc
    if not frames:
        raise CalibrationError(f"calibration video {path} yielded no frames")
    if min(frames[0][1].shape[:2]) < MIN_SIDE:
        raise CalibrationError(f"calibration video {path} is smaller than {MIN_SIDE} px on a side")
    return frames


def _live_config(source: Source) -> Any:
    """A source config for live sources (URL, /dev/video device, or config object); None otherwise."""
    if hasattr(source, "type") and not isinstance(source, (str, Path)):
        return source
    text = str(source)
    if text.startswith(("rtsp://", "rtsps://")):
        return RtspSource(type="rtsp", url=text)
    if text.startswith("/dev/video"):
        return V4l2Source(type="v4l2", device=text)
    return None


def _live_frames(cfg: Any, limit: int, interval_s: float, timeout_s: float) -> List[Tuple[str, np.ndarray]]:
    reader = open_reader(cfg)
    frames: List[Tuple[str, np.ndarray]] = []
    try:
        try:
            reader.open()
        except EdgedetError as exc:
            raise CalibrationError(f"cannot open the calibration source: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        next_take = 0.0
        while len(frames) < limit and time.monotonic() < deadline:
            frame = reader.read()
            if frame is None:
                if getattr(reader, "ended", False):
                    break
                time.sleep(0.05)
                continue
            now = time.monotonic()
            if now >= next_take:
                frames.append((f"{reader.description}#{len(frames)}", frame))
                next_take = now + interval_s
    finally:
        reader.close()
    if not frames:
        raise CalibrationError(
            f"the calibration source {reader.description} delivered no frame in {timeout_s:g} s"
        )
    if len(frames) < limit:
        log.warning("calibration: only %d of %d frames arrived in %.0f s", len(frames), limit, timeout_s)
    return frames


# -- preprocessing -----------------------------------------------------------------------------------------


def _preprocess(images: Sequence[np.ndarray], spec: InputSpec) -> List[np.ndarray]:
    pre = CpuPreprocessor(spec)
    out: List[np.ndarray] = []
    try:
        for image in images:
            buf = pre.allocate()
            pre.run(image, buf)
            out.append(buf)
    finally:
        pre.close()
    return out
