"""From raw outputs to detections in source pixels: decode, thresholds, allow-list, NMS, mapping back.

``build_postprocessor`` and ``input_spec_for`` are what the app calls; both read the model through the
Backend protocol only, so they work the same for ONNX Runtime and TensorRT.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgedet.backends.base import Backend
from edgedet.backends.onnx_file import read_model_io
from edgedet.errors import ModelError
from edgedet.models.base import Candidates, Decoder
from edgedet.models.config import ModelConfig
from edgedet.models.detect import detect_family, make_decoder
from edgedet.models.labels import resolve_class_names
from edgedet.models.nms import nms
from edgedet.types import ChannelOrder, Detection, InputSpec, Letterbox, TensorSpec

log = logging.getLogger(__name__)

# family -> (channel order, scale, centred letterbox); every family pads with 114
_CONVENTIONS: Dict[str, Tuple[ChannelOrder, float, bool]] = {
    "yolox": (ChannelOrder.BGR, 1.0, False),
    "yolov5": (ChannelOrder.RGB, 1.0 / 255.0, True),
    "yolov8": (ChannelOrder.RGB, 1.0 / 255.0, True),
    "efficient_nms": (ChannelOrder.RGB, 1.0 / 255.0, True),
}


class PostProcessor:
    """Callable turning one batch of raw outputs into one tuple of detections per letterboxed image."""

    def __init__(
        self,
        decoder: Decoder,
        class_names: List[str],
        score_threshold: float,
        class_thresholds: Optional[Dict[int, float]] = None,
        allowed_classes: Optional[Sequence[int]] = None,
        nms_iou: float = 0.45,
        max_detections: int = 100,
    ) -> None:
        self.decoder = decoder
        self.family: str = decoder.family
        self.class_names = list(class_names)
        self.score_threshold = float(score_threshold)
        self.class_thresholds = dict(class_thresholds or {})
        self.allowed = None if allowed_classes is None else np.asarray(sorted(allowed_classes), np.int64)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        # decoders drop rows below this before the per-class checks: the lowest threshold in force
        self._min_score = min([self.score_threshold, *self.class_thresholds.values()])

    def __call__(
        self, outputs: Mapping[str, np.ndarray], letterboxes: Sequence[Letterbox]
    ) -> List[Tuple[Detection, ...]]:
        items = self.decoder.decode(outputs, self._min_score)
        if len(letterboxes) > len(items):
            raise ModelError(f"{len(letterboxes)} images but the model returned {len(items)} results")
        # a fixed-batch model may run with fewer real images: the extra items are ignored
        return [self._finish(c, lb) for c, lb in zip(items, letterboxes)]

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return f"class{class_id}"

    def _finish(self, c: Candidates, letterbox: Letterbox) -> Tuple[Detection, ...]:
        if len(c) == 0:
            return ()
        ids = c.class_ids
        if self.class_thresholds:
            thresholds = np.full(ids.shape, self.score_threshold, dtype=np.float32)
            for cid, value in self.class_thresholds.items():
                thresholds[ids == cid] = value
            keep = c.scores >= thresholds
        else:
            keep = c.scores >= self.score_threshold
        if self.allowed is not None:
            keep &= np.isin(ids, self.allowed)
        boxes, scores, ids = c.boxes[keep], c.scores[keep], ids[keep]
        if self.decoder.nms_inside:
            order = np.argsort(-scores, kind="stable")[: self.max_detections]
        else:
            order = nms(boxes, scores, ids, self.nms_iou, self.max_detections)
        if order.size == 0:
            return ()
        mapped = letterbox.to_source(boxes[order])
        # clip again through views: Letterbox.to_source's clip writes into fancy-indexed copies
        np.clip(mapped[:, 0::2], 0, letterbox.source_width, out=mapped[:, 0::2])
        np.clip(mapped[:, 1::2], 0, letterbox.source_height, out=mapped[:, 1::2])
        # boxes entirely in the padding collapse to nothing once clipped to the image
        valid = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
        return tuple(
            Detection(x1, y1, x2, y2, s, k, self.class_name(k))
            for (x1, y1, x2, y2), s, k in zip(
                mapped[valid].tolist(), scores[order][valid].tolist(), ids[order][valid].tolist()
            )
        )


def image_input(cfg: ModelConfig, backend: Backend) -> Tuple[TensorSpec, int, int, int]:
    """The image input of the model as (spec, width, height, batch); NCHW with 3 channels expected."""
    images = [i for i in backend.inputs if len(i.shape) == 4]
    if not images:
        shapes = ", ".join(f"{i.name} {list(i.shape)}" for i in backend.inputs)
        raise ModelError(f"the model has no 4-D image input (inputs: {shapes})")
    spec = images[0]
    b, c, h, w = spec.shape
    if c != 3:
        if spec.shape[3] == 3:
            raise ModelError(f"input {spec.name} {list(spec.shape)} is NHWC; edgedet feeds NCHW models")
        if c is not None:
            raise ModelError(f"input {spec.name} {list(spec.shape)} has {c} channels; 3 expected")
    if cfg.input_size is not None:
        cw, ch = cfg.input_size
        if (w is not None and w != cw) or (h is not None and h != ch):
            raise ModelError(f"model.input_size {cw}x{ch} does not match the model's input {w}x{h}")
        w, h = cw, ch
    if w is None or h is None:
        raise ModelError(
            f"input {spec.name} {list(spec.shape)} has a dynamic size; set model.input_size: [width, height]"
        )
    return spec, int(w), int(h), int(b) if b else 1


def input_spec_for(cfg: ModelConfig, backend: Backend, family: str) -> InputSpec:
    """The preprocessing the model needs: its input's size and dtype, the family's conventions (YOLOX:
    BGR 0..255 top-left; others: RGB 0..1 centred; pad 114) and every override from the config."""
    spec, width, height, batch = image_input(cfg, backend)
    if spec.dtype not in ("float32", "float16"):
        raise ModelError(f"input {spec.name} has dtype {spec.dtype}; float32 or float16 expected")
    order, scale, center = _CONVENTIONS.get(family, _CONVENTIONS["yolov8"])
    return InputSpec(
        name=spec.name,
        width=width,
        height=height,
        channel_order=ChannelOrder(cfg.channel_order) if cfg.channel_order else order,
        scale=cfg.scale if cfg.scale is not None else scale,
        mean=cfg.mean if cfg.mean is not None else (0.0, 0.0, 0.0),
        std=cfg.std if cfg.std is not None else (1.0, 1.0, 1.0),
        pad_value=cfg.pad_value if cfg.pad_value is not None else 114.0,
        center=cfg.letterbox_center if cfg.letterbox_center is not None else center,
        dtype=spec.dtype,
        batch=batch,
    )


def _class_ids(names: Sequence[str], wanted: Sequence[str], setting: str) -> List[int]:
    index = {n: i for i, n in enumerate(names)}
    unknown = [w for w in wanted if w not in index]
    if unknown:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ModelError(
            f"{setting}: unknown class name(s) {', '.join(repr(u) for u in unknown)} "
            f"(the model's classes: {shown})"
        )
    return [index[w] for w in wanted]


def build_postprocessor(
    cfg: ModelConfig,
    backend: Backend,
    class_names: Optional[List[str]] = None,
    *,
    base_dir: Optional[Path] = None,
    score_threshold: Optional[float] = None,
    nms_iou: Optional[float] = None,
    max_detections: Optional[int] = None,
) -> PostProcessor:
    """Decoder (``cfg.family``, or detected from the outputs) plus the config's thresholds and names.

    ``class_names`` overrides every other source of names; ``base_dir`` resolves a relative labels file.
    ``score_threshold``/``nms_iou``/``max_detections`` override the config (evaluation uses 0.001, 0.65,
    100; it also clears ``class_thresholds`` and ``classes`` with ``cfg.model_copy(update=...)``).
    """
    task = backend.metadata.get("task")
    if task is not None and task != "detect":
        raise ModelError(f"the model is an Ultralytics '{task}' model; edgedet decodes 'detect' models")
    _, width, height, _ = image_input(cfg, backend)
    decoder = make_decoder(cfg.family, backend.outputs, width, height)
    names = list(class_names) if class_names is not None else None
    if names is None:
        names = resolve_class_names(cfg.labels, backend.metadata, base_dir)
    n_model = decoder.num_classes
    if n_model is not None and len(names) != n_model:
        log.warning(
            "the model has %d classes but %d class names are known; missing ones are named classN",
            n_model,
            len(names),
        )
    ids = _class_ids(names, list(cfg.class_thresholds), "model.class_thresholds")
    thresholds = dict(zip(ids, cfg.class_thresholds.values()))
    allowed = None if cfg.classes is None else _class_ids(names, cfg.classes, "model.classes")
    post = PostProcessor(
        decoder,
        names,
        score_threshold=score_threshold if score_threshold is not None else cfg.score_threshold,
        class_thresholds=thresholds,
        allowed_classes=allowed,
        nms_iou=nms_iou if nms_iou is not None else cfg.nms_iou,
        max_detections=max_detections if max_detections is not None else cfg.max_detections,
    )
    log.info("decoding %s outputs (%d class names)", post.family, len(names))
    return post


class _InputsOnly:
    """Just enough of the Backend protocol for ``input_spec_for`` before any backend exists."""

    def __init__(self, inputs: Sequence[TensorSpec]) -> None:
        self.inputs = list(inputs)


def resolve_input_spec(cfg: ModelConfig, model_path: Path) -> InputSpec:
    """The preprocessing ``model_path`` needs, from the ONNX file alone (before any backend is open):
    what the TensorRT backend keys its engines by and calibrates INT8 with."""
    inputs, outputs = read_model_io(model_path)
    family: str = cfg.family
    if family == "auto":
        family = detect_family(outputs)
    return input_spec_for(cfg, _InputsOnly(inputs), family)  # type: ignore[arg-type]
