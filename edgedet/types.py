"""Typed values that cross stage boundaries.

Everything here is plain data: no behaviour beyond small derived properties, so stages can be tested
in isolation. Frames carry numpy arrays; everything else is immutable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output. Dynamic dimensions are None."""

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: str  # numpy dtype name: "float32", "float16", "int32", "int64", ...


class ChannelOrder(str, enum.Enum):
    BGR = "bgr"
    RGB = "rgb"


@dataclass(frozen=True)
class InputSpec:
    """What a model wants as input, as far as preprocessing is concerned.

    ``scale`` multiplies pixel values after colour conversion (1.0 keeps 0..255, 1/255 gives 0..1);
    ``mean``/``std`` are applied after scaling (per channel, in the model's channel order).
    ``center`` places the letterboxed image in the middle instead of the top-left corner.
    """

    name: str
    width: int
    height: int
    channel_order: ChannelOrder = ChannelOrder.BGR
    scale: float = 1.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: float = 114.0
    center: bool = False
    dtype: str = "float32"  # "float32" or "float16"
    batch: int = 1

    @property
    def chw_shape(self) -> Tuple[int, int, int]:
        return (3, self.height, self.width)


@dataclass(frozen=True)
class Letterbox:
    """How a source image was mapped into the model input: model = source * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    source_width: int
    source_height: int

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes in model-input pixels back to source pixels, clipped to the image."""
        out = boxes.astype(np.float32, copy=True)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views (fancy indexing would clip a copy)
        xs -= self.pad_x
        xs /= self.scale
        ys -= self.pad_y
        ys /= self.scale
        np.clip(xs, 0, self.source_width, out=xs)
        np.clip(ys, 0, self.source_height, out=ys)
        return out


@dataclass
class Frame:
    """One decoded image from a source, before preprocessing."""

    camera: str
    seq: int  # per-camera frame counter from the source (frames read, including dropped ones)
    capture_time: float  # wall clock (time.time()) when the frame was read
    capture_monotonic: float  # time.monotonic() at the same instant, for latency measurement
    image: np.ndarray  # HxWx3 uint8 BGR

    @property
    def size(self) -> Tuple[int, int]:
        return (int(self.image.shape[1]), int(self.image.shape[0]))


@dataclass
class PreparedFrame:
    """A frame after preprocessing: the model-input tensor plus what is needed to map boxes back.

    ``tensor`` is a reusable buffer owned by the capture stage's pool; the consumer must hand it back
    through ``release`` once inference has read it.
    """

    camera: str
    seq: int
    capture_time: float
    capture_monotonic: float
    letterbox: Letterbox
    tensor: object  # np.ndarray on the CPU path; a device buffer handle on the CUDA path
    preprocess_ms: float = 0.0
    image: Optional[np.ndarray] = None  # kept only when a consumer (annotation) asked for it
    release: Optional[object] = None  # callable returning ``tensor`` to its pool


@dataclass(frozen=True)
class Detection:
    """One detected object in source-image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    class_name: str
    track_id: Optional[int] = None  # set by the tracking stage for confirmed objects


@dataclass
class DetectionResult:
    """All detections for one frame, with the timings of every stage it went through."""

    camera: str
    seq: int
    capture_time: float
    capture_monotonic: float
    source_width: int
    source_height: int
    detections: Tuple[Detection, ...]
    timings_ms: Dict[str, float] = field(default_factory=dict)
    # the source image, only while the tracking stage needs it for snapshots (dropped after it)
    image: Optional[np.ndarray] = None
