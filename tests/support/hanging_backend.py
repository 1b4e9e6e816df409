"""A real backend (ONNX Runtime on the real model) whose ``infer`` hangs once a trigger file exists.

Meant for a Python plug-in backend type (``backend: {type: python, factory:
"tests.support.hanging_backend:HangingBackend", options: {hang_file: ...}}``): the daemon runs normally
until the test creates ``hang_file``; from then on every inference call blocks, exactly like a wedged
GPU call, and only the watchdog can get the daemon restarted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.types import TensorSpec


class HangingBackend:
    name = "hanging-onnxruntime"

    def __init__(self, model_path: str | Path, hang_file: str, **_: Any) -> None:
        self._inner = OnnxRuntimeBackend(model_path, threads=1)
        self.precision = self._inner.precision
        self.hang_file = Path(hang_file)
        self._never = threading.Event()
        self.calls = 0

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inner.inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._inner.outputs

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._inner.metadata

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls += 1
        if self.hang_file.exists():
            self._never.wait()  # hung: no timeout, no progress, no heartbeat
        return self._inner.infer(feeds)

    def close(self) -> None:
        self._inner.close()
