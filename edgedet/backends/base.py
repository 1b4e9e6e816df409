"""The small protocol every inference backend implements (ONNX Runtime, TensorRT, test doubles)."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

from edgedet.types import TensorSpec

try:  # Python 3.8 has Protocol in typing already
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]


class Backend(Protocol):
    """A loaded model ready to run.

    ``inputs``/``outputs`` describe the model; ``infer`` takes one array per input name (batched on the
    first axis) and returns one array per output name. ``metadata`` holds model metadata strings (for
    instance Ultralytics' ``names``). ``close`` frees everything; calling ``infer`` afterwards is an error.
    """

    name: str  # e.g. "onnxruntime", "tensorrt"
    precision: str  # "fp32", "fp16", "int8", "mixed"

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def close(self) -> None: ...
