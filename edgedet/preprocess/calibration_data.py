"""Calibration frames preprocessed exactly like inference: one (1, 3, H, W) tensor per frame for the
precision tools, or contiguous fixed-size batches streamed to the TensorRT calibrator (memory stays at
one batch however many frames are used). The frames come from edgedet/sources/calibration.py.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np

from edgedet.errors import BackendError
from edgedet.preprocess.base import Preprocessor
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.types import InputSpec

log = logging.getLogger(__name__)


def preprocess_frames(images: Iterable[np.ndarray], spec: InputSpec) -> List[np.ndarray]:
    """Each image as the model input tensor inference would give it (CPU reference preprocessing)."""
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
