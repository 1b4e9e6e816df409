"""Model and post-processing configuration."""

from typing import Dict, List, Optional, Tuple, Union

from pydantic import Field, PositiveFloat, PositiveInt
from typing_extensions import Literal

from edgedet.configbase import Strict

Family = Literal["auto", "yolox", "yolov5", "yolov8", "efficient_nms"]


class ModelConfig(Strict):
    path: str
    # decoder; "auto" picks it from the model's output shapes
    family: Family = "auto"
    # preprocessing the model expects; None takes the family's convention (YOLOX: BGR 0..255,
    # Ultralytics/YOLOv5: RGB 0..1)
    channel_order: Optional[Literal["bgr", "rgb"]] = None
    scale: Optional[float] = Field(default=None, gt=0)
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[PositiveFloat, PositiveFloat, PositiveFloat]] = None
    letterbox_center: Optional[bool] = None
    # [width, height] of the model input, needed only when the model's input size is dynamic
    input_size: Optional[Tuple[PositiveInt, PositiveInt]] = None
    pad_value: Optional[float] = Field(default=None, ge=0, le=255)
    # class names: a list, a labels file (one name per line), or None (model metadata, else COCO-80)
    labels: Optional[Union[List[str], str]] = None
    score_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    # per-class thresholds by class name, overriding score_threshold
    class_thresholds: Dict[str, float] = {}
    # only these class names are reported (None: all)
    classes: Optional[List[str]] = None
    nms_iou: float = Field(default=0.45, gt=0.0, le=1.0)
    max_detections: int = Field(default=100, gt=0)
