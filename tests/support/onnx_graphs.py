"""Small real ONNX models that emit a chosen output layout from known boxes.

Each model takes an ``images`` input and returns constant tensors (Constant nodes), so it runs through the
real ONNX Runtime backend and exercises the real decoders, thresholds, NMS and letterbox mapping. The
helpers below build the constant tensors for each family's layout from boxes given in model-input pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgedet.types import Letterbox

Box = Tuple[float, float, float, float]  # x1, y1, x2, y2

_ONNX_TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
}


def save_constant_model(
    path: Path,
    outputs: Mapping[str, np.ndarray],
    input_shape: Sequence[Optional[int]] = (1, 3, 416, 416),
    input_dtype: type[np.generic] = np.float32,
    metadata: Optional[Mapping[str, str]] = None,
    extra_nodes: Sequence[onnx.NodeProto] = (),
) -> Path:
    """Write a model whose outputs are ``outputs`` whatever the input (one Constant node each).

    ``extra_nodes`` lets a test add nodes (e.g. a QuantizeLinear on the input) that change what the file
    says about the model without changing the outputs. A None in ``input_shape`` is a dynamic dimension.
    """
    nodes = list(extra_nodes)
    graph_outputs = []
    for name, array in outputs.items():
        value = np.ascontiguousarray(array)
        nodes.append(
            helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(value, name=f"{name}_value")
            )
        )
        graph_outputs.append(helper.make_tensor_value_info(name, _ONNX_TYPES[value.dtype], list(value.shape)))
    dims = [d if d is not None else f"dim{i}" for i, d in enumerate(input_shape)]
    graph_input = helper.make_tensor_value_info("images", _ONNX_TYPES[np.dtype(input_dtype)], dims)
    graph = helper.make_graph(nodes, "constant_outputs", [graph_input], graph_outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgedet-tests"
    )
    model.ir_version = 8  # readable by every onnxruntime edgedet supports
    for key, text in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def to_model_pixels(boxes: Sequence[Box], letterbox: Letterbox) -> np.ndarray:
    """Source-pixel xyxy boxes -> model-input pixels (the inverse of Letterbox.to_source)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = b * letterbox.scale
    out[:, 0::2] += letterbox.pad_x
    out[:, 1::2] += letterbox.pad_y
    return out


def _xywh(boxes: np.ndarray) -> np.ndarray:
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([cx, cy, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def yolov5_output(
    boxes: np.ndarray, scores: Sequence[float], class_ids: Sequence[int], num_classes: int, rows: int = 120
) -> np.ndarray:
    """[1, rows, 5 + C]: cx, cy, w, h, objectness = score, one-hot class; other rows all zero."""
    out = np.zeros((1, rows, 5 + num_classes), dtype=np.float32)
    n = len(scores)
    out[0, :n, :4] = _xywh(boxes)
    out[0, :n, 4] = scores
    out[0, np.arange(n), 5 + np.asarray(class_ids)] = 1.0
    # background rows: some class probability but no objectness, so they must never come out
    out[0, n:, 5] = 0.9
    return out


def yolov8_output(
    boxes: np.ndarray, scores: Sequence[float], class_ids: Sequence[int], num_classes: int, rows: int = 120
) -> np.ndarray:
    """[1, 4 + C, rows]: cx, cy, w, h then per-class scores (the box's score in its class column)."""
    out = np.zeros((1, 4 + num_classes, rows), dtype=np.float32)
    n = len(scores)
    out[0, :4, :n] = _xywh(boxes).T
    out[0, 4 + np.asarray(class_ids), np.arange(n)] = scores
    out[0, 4, n:] = 0.01  # low-scoring background
    return out


def efficient_nms_outputs(
    boxes: np.ndarray, scores: Sequence[float], class_ids: Sequence[int], keep_top: int = 20
) -> Dict[str, np.ndarray]:
    """num_dets [1, 1] int32, det_boxes [1, K, 4], det_scores [1, K], det_classes [1, K] int32.

    Rows past num_dets hold garbage on purpose: a decoder must ignore them.
    """
    n = len(scores)
    det_boxes = np.full((1, keep_top, 4), 7.0, dtype=np.float32)
    det_scores = np.full((1, keep_top), 0.99, dtype=np.float32)
    det_classes = np.full((1, keep_top), 1, dtype=np.int32)
    det_boxes[0, :n] = boxes
    det_scores[0, :n] = scores
    det_classes[0, :n] = class_ids
    return {
        "num_dets": np.array([[n]], dtype=np.int32),
        "det_boxes": det_boxes,
        "det_scores": det_scores,
        "det_classes": det_classes,
    }


def end2end_output(
    boxes: np.ndarray, scores: Sequence[float], class_ids: Sequence[int], rows: int = 300
) -> np.ndarray:
    """[1, rows, 6]: x1, y1, x2, y2, score, class (Ultralytics end-to-end / YOLOv10); padding rows score 0."""
    out = np.zeros((1, rows, 6), dtype=np.float32)
    n = len(scores)
    out[0, :n, :4] = boxes
    out[0, :n, 4] = scores
    out[0, :n, 5] = class_ids
    return out


def bad_layout_outputs() -> Dict[str, np.ndarray]:
    """A classification-style output ([1, 1000]) that no detection decoder accepts."""
    return {"logits": np.zeros((1, 1000), dtype=np.float32)}
