"""Preprocessing: letterbox + colour order + scaling + HWC->CHW, written into the model's input buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgedet.preprocess.base import Preprocessor
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.preprocess.cuda import CudaPreprocessor
from edgedet.types import InputSpec


def make_preprocessor(
    kind: str, spec: InputSpec, device: int = 0, cache_dir: Optional[Path] = None
) -> Preprocessor:
    """Build the preprocessor named by ``kind``: "cpu" (OpenCV + numpy) or "cuda" (pycuda kernel on
    GPU ``device``, compiled kernels cached in ``cache_dir``).

    OpenCV and pycuda are imported only when a preprocessor is built, so choosing "cpu" never touches
    CUDA and vice versa.
    """
    if kind == "cpu":
        return CpuPreprocessor(spec)
    if kind == "cuda":
        folder = str(cache_dir) if cache_dir is not None else None
        return CudaPreprocessor(spec, device=device, cache_dir=folder)
    raise ValueError(f"unknown preprocessor kind {kind!r} (cpu or cuda)")
