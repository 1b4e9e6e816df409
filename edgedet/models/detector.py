"""One image in, detections out: backend + CPU preprocessing + post-processing in one object.

For ``edgedet detect`` and for evaluation; the daemon uses the pieces separately in its pipeline.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgedet.backends.base import Backend
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import PostProcessor, build_postprocessor, input_spec_for
from edgedet.preprocess import make_preprocessor
from edgedet.types import Detection, InputSpec, Letterbox

log = logging.getLogger(__name__)


class ImageDetector:
    """Runs a loaded backend on single BGR images. The backend stays owned by the caller unless
    ``own_backend`` is True (then ``close`` closes it too).

    ``timings_ms`` holds the last call's preprocess / infer / postprocess times.
    """

    def __init__(
        self,
        backend: Backend,
        post: PostProcessor,
        spec: InputSpec,
        *,
        preprocess: str = "cpu",
        own_backend: bool = False,
    ) -> None:
        self.backend = backend
        self.post = post
        self.spec = spec
        self.preprocessor = make_preprocessor(preprocess, self.spec)
        buffer: Any = self.preprocessor.allocate()
        self._feed: Any
        if self.spec.batch > 1 and isinstance(buffer, np.ndarray):
            # a fixed-batch model gets one real image in slot 0 and zeros elsewhere
            self._feed = np.zeros((self.spec.batch, *buffer.shape[1:]), dtype=buffer.dtype)
            self._buffer: object = self._feed[0:1]
        else:
            self._feed = buffer
            self._buffer = buffer
        self._own_backend = own_backend
        self.timings_ms: Dict[str, float] = {}

    @classmethod
    def for_model(
        cls,
        backend: Backend,
        cfg: ModelConfig,
        class_names: Optional[List[str]] = None,
        *,
        base_dir: Optional[Path] = None,
        score_threshold: Optional[float] = None,
        nms_iou: Optional[float] = None,
        max_detections: Optional[int] = None,
        preprocess: str = "cpu",
        own_backend: bool = False,
    ) -> ImageDetector:
        """Pick the decoder and input spec for ``backend``'s model from ``cfg`` (overrides win)."""
        post = build_postprocessor(
            cfg,
            backend,
            class_names,
            base_dir=base_dir,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            max_detections=max_detections,
        )
        spec = input_spec_for(cfg, backend, post.family)
        return cls(backend, post, spec, preprocess=preprocess, own_backend=own_backend)

    def detect(self, image: np.ndarray) -> Tuple[Detection, ...]:
        return self.detect_with_letterbox(image)[0]

    def detect_with_letterbox(self, image: np.ndarray) -> Tuple[Tuple[Detection, ...], Letterbox]:
        t0 = time.perf_counter()
        letterbox = self.preprocessor.run(image, self._buffer)
        t1 = time.perf_counter()
        outputs = self.backend.infer({self.spec.name: self._feed})
        t2 = time.perf_counter()
        detections = self.post(outputs, [letterbox])[0]
        t3 = time.perf_counter()
        self.timings_ms = {
            "preprocess": (t1 - t0) * 1000.0,
            "infer": (t2 - t1) * 1000.0,
            "postprocess": (t3 - t2) * 1000.0,
        }
        return detections, letterbox

    def close(self) -> None:
        self.preprocessor.close()
        if self._own_backend:
            self.backend.close()
