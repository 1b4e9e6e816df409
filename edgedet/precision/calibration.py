"""Calibration data for INT8 quantization: model-input tensors made from images, video or a live source.

Sources, picked from what ``source`` is:

- an image folder (``.jpg .jpeg .png .bmp .webp .tif .tiff``, name order), or a folder of ``.npy`` tensors
  already preprocessed to the model's input shape;
- a video file: ``limit`` frames sampled evenly over the whole file;
- a live source: an ``rtsp://`` URL, a ``/dev/videoN`` device, or any source config object of
  ``edgedet.sources.config`` (opened through ``edgedet.sources.registry``); one frame is taken every
  ``interval_s`` seconds so the set covers some time, not one instant.

The frames come from edgedet/sources/calibration.py, the one calibration reader (the TensorRT calibrator
uses it too), and go through the same CPU preprocessing as inference (edgedet/preprocess/
calibration_data.py), with the model family's conventions, so the ranges measured are the ranges the
deployed model sees. Every bad input is a ``CalibrationError`` that names the files at fault; nothing is
silently skipped unless ``skip_bad``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.errors import SourceError, require
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import build_postprocessor, input_spec_for
from edgedet.precision.errors import CalibrationError
from edgedet.preprocess.calibration_data import preprocess_frames
from edgedet.sources.calibration import (
    TENSOR_SUFFIX,
    Source,
    describe_source,
    iter_calibration_frames,
    listing,
    live_config,
    quote_names,
)
from edgedet.sources.suffixes import IMAGE_SUFFIXES
from edgedet.types import InputSpec

log = logging.getLogger(__name__)


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
    path = None if live_config(source) is not None else Path(str(source)).expanduser()
    try:
        if path is not None and path.is_dir():
            tensors = _npy_folder(path, limit, spec)
            if tensors is not None:
                found, arrays = tensors
                return CalibrationSet(spec.name, arrays, found, f"{len(arrays)} tensors from {path}", spec)
        skipped: List[str] = []
        frames = list(
            iter_calibration_frames(
                source, limit, skip_bad=skip_bad, skipped=skipped, interval_s=interval_s, timeout_s=timeout_s
            )
        )
    except SourceError as exc:
        raise CalibrationError(str(exc)) from exc
    description = f"{len(frames)} {describe_source(source, limit)}"
    log.info("calibration: %s", description)
    tensors_list = preprocess_frames([f for _, f in frames], spec)
    return CalibrationSet(spec.name, tensors_list, [n for n, _ in frames], description, spec, skipped)


def _npy_folder(folder: Path, limit: int, spec: InputSpec) -> Optional[Tuple[List[str], List[np.ndarray]]]:
    """Preprocessed .npy tensors in ``folder``, checked against the model input; None if there are none."""
    files = listing(folder)
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
            f"{want} float: {quote_names(bad)}"
        )
    return names, arrays


def sample_video_frames(path: Path, limit: int) -> List[Tuple[str, np.ndarray]]:
    """``limit`` (origin, frame) pairs spread over the video at ``path`` (agreement checks)."""
    try:
        return list(iter_calibration_frames(Path(path), limit))
    except SourceError as exc:
        raise CalibrationError(str(exc)) from exc
