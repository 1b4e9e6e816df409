"""The preprocessing interface shared by the CPU reference and the CUDA implementation."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from edgedet.types import InputSpec, Letterbox

try:
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore[assignment]


def letterbox_geometry(src_w: int, src_h: int, spec: InputSpec) -> Tuple[float, int, int, float, float]:
    """Scale, resized size and padding for fitting a src_w x src_h image into the model input.

    Returns (scale, new_w, new_h, pad_x, pad_y). Shared by every implementation so that CPU and CUDA
    outputs agree to the pixel.

    ``scale = min(W / src_w, H / src_h)``; the resized size is floor(src * scale) as in YOLOX's own
    preprocessing (the reference mAP in shared/docs/reference-measurements.md is measured that way; the
    1e-6 keeps e.g. 640 * 0.65 from flooring to 415); the centred padding is floor((W - new_w) / 2),
    which is what Ultralytics' round(dw - 0.1) gives.
    """
    scale = min(spec.width / src_w, spec.height / src_h)
    new_w = max(1, min(spec.width, int(src_w * scale + 1e-6)))
    new_h = max(1, min(spec.height, int(src_h * scale + 1e-6)))
    if spec.center:
        pad_x = (spec.width - new_w) / 2.0
        pad_y = (spec.height - new_h) / 2.0
        pad_x, pad_y = float(int(pad_x)), float(int(pad_y))
    else:
        pad_x = pad_y = 0.0
    return scale, new_w, new_h, pad_x, pad_y


class Preprocessor(Protocol):
    """Turns a BGR uint8 HxWx3 image into the model-input tensor.

    ``allocate`` returns a new output buffer suitable for ``run`` (a numpy array on the CPU, a device
    buffer on CUDA); buffers are allocated once per pool slot and reused. ``run`` writes into ``out``
    and returns the geometry needed to map boxes back to source pixels.
    """

    spec: InputSpec

    def allocate(self) -> object: ...

    def run(self, image: np.ndarray, out: object) -> Letterbox: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameMemory(Protocol):
    """A preprocessor that reads frames fastest from memory of its own (CUDA: page-locked on a discrete
    GPU, mapped on Jetson). Sources decode straight into these buffers (sources/frames.py).

    A buffer may be written again as soon as ``run()`` that read it has returned.
    """

    def frame_buffer(self, width: int, height: int) -> np.ndarray:
        """A new HxWx3 uint8 array to decode frames into."""
        ...

    def free_frame_buffer(self, array: np.ndarray) -> None:
        """Give back a buffer from ``frame_buffer`` (never used again by the caller)."""
        ...
