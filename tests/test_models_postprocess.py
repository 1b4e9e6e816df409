"""Class names, family detection, NMS, thresholds, allow-list and max detections."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.errors import ModelError
from edgedet.models.config import ModelConfig
from edgedet.models.detect import detect_family
from edgedet.models.labels import COCO80, COCO80_CATEGORY_IDS, parse_names, resolve_class_names
from edgedet.models.nms import nms
from edgedet.models.postprocess import PostProcessor, build_postprocessor
from edgedet.models.yolox import grid_count
from edgedet.types import Detection, Letterbox, TensorSpec
from tests.support import onnx_graphs as g

# -- class names ------------------------------------------------------------------------------------------


def test_coco80_names_and_category_ids() -> None:
    assert len(COCO80) == 80 and len(COCO80_CATEGORY_IDS) == 80
    assert COCO80[0] == "person" and COCO80[79] == "toothbrush"
    assert COCO80_CATEGORY_IDS[11] == 13  # stop sign: COCO skips id 12
    assert COCO80_CATEGORY_IDS[-1] == 90


def test_parse_ultralytics_names_metadata() -> None:
    assert parse_names("{0: 'person', 1: 'bicycle', 2: 'car'}") == ["person", "bicycle", "car"]
    assert parse_names("{0: 'a', 2: 'c'}") == ["a", "class1", "c"]  # index == class id, gaps named
    assert parse_names("['x', 'y']") == ["x", "y"]
    assert parse_names('{"0": "json", "1": "style"}') == ["json", "style"]


@pytest.mark.parametrize(
    "text", ["__import__('os').system('echo pwned')", "{0: open('/etc/passwd').read()}", "42", "{'a': 'b'}"]
)
def test_parse_names_never_evaluates_code(text: str) -> None:
    with pytest.raises(ValueError):
        parse_names(text)


def test_class_names_sources_in_order(tmp_path: Path) -> None:
    meta = {"names": "{0: 'meta0', 1: 'meta1'}"}
    labels = tmp_path / "labels.txt"
    labels.write_text("# my classes\nforklift\n\npallet\n", encoding="utf-8")
    assert resolve_class_names(["a", "b"], meta) == ["a", "b"]
    assert resolve_class_names(str(labels), meta) == ["forklift", "pallet"]
    assert resolve_class_names("labels.txt", meta, base_dir=tmp_path) == ["forklift", "pallet"]
    assert resolve_class_names(None, meta) == ["meta0", "meta1"]
    assert resolve_class_names(None, {}) == COCO80
    assert resolve_class_names(None, {"names": "not a literal("}) == COCO80  # warned, not fatal


def test_labels_file_problems_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"labels file not found: .*missing\.txt"):
        resolve_class_names(str(tmp_path / "missing.txt"), {})
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n", encoding="utf-8")
    with pytest.raises(ModelError, match="has no class names"):
        resolve_class_names(str(empty), {})


# -- family detection -------------------------------------------------------------------------------------


def _out(*shape: int, name: str = "output", dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name=name, shape=tuple(shape), dtype=dtype)


def test_detect_family_from_shapes() -> None:
    assert grid_count(416, 416) == 3549 and grid_count(640, 640) == 8400
    assert detect_family([_out(1, 3549, 85)], (416, 416)) == "yolox"
    assert detect_family([_out(1, 3549, 85)]) == "yolox"  # square size found without being told
    assert detect_family([_out(1, 8400, 85)], (640, 640)) == "yolox"
    assert detect_family([_out(1, 25200, 85)], (640, 640)) == "yolov5"
    assert detect_family([_out(1, 25200, 85)]) == "yolov5"
    assert detect_family([_out(1, 84, 8400)]) == "yolov8"
    assert detect_family([_out(1, 5, 8400)]) == "yolov8"  # one class
    assert detect_family([_out(1, 25200, 6)], (640, 640)) == "yolov5"  # one class, with objectness
    assert detect_family([_out(1, 300, 6)], (640, 640)) == "efficient_nms"  # YOLOv10 / end-to-end
    nms_outputs = [
        _out(1, 1, name="num_dets", dtype="int32"),
        _out(1, 100, 4, name="det_boxes"),
        _out(1, 100, name="det_scores"),
        _out(1, 100, name="det_classes", dtype="int32"),
    ]
    assert detect_family(nms_outputs) == "efficient_nms"
    # the older BatchedNMS layout, classes as float: told apart by name
    batched = [
        _out(1, 1, name="num_detections", dtype="int32"),
        _out(1, 100, 4, name="nmsed_boxes"),
        _out(1, 100, name="nmsed_scores"),
        _out(1, 100, name="nmsed_classes"),
    ]
    assert detect_family(batched) == "efficient_nms"
    # extra per-level tensors some YOLOv5 exports add are ignored
    assert detect_family([_out(1, 25200, 85), _out(1, 3, 80, 80, 85, name="p3")]) == "yolov5"


@pytest.mark.parametrize(
    "outputs",
    [
        [_out(1, 1000)],
        [_out(1, 3, 80, 80, 85)],
        [_out(1, 8400, 85, name="a"), _out(1, 8400, 85, name="b")],
        [_out(1, 8400, 5)],
        [_out(1, 4, 8400)],
    ],
)
def test_detect_family_rejects_unknown_layouts(outputs: List[TensorSpec]) -> None:
    with pytest.raises(ModelError, match=r"match no decoder; set model.family"):
        detect_family(outputs)


# -- NMS --------------------------------------------------------------------------------------------------


def test_nms_is_class_aware_greedy_and_capped() -> None:
    boxes = np.array(
        [
            [0, 0, 100, 100],  # 0: best of class 0
            [5, 5, 105, 105],  # 1: IoU 0.82 with 0, same class -> suppressed
            [5, 5, 105, 105],  # 2: same place, class 1 -> kept
            [50, 0, 150, 100],  # 3: IoU 1/3 with 0 -> kept at 0.45
            [300, 300, 310, 310],  # 4: alone
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, classes, 0.45, 100).tolist() == [0, 2, 3, 4]
    assert nms(boxes, scores, classes, 0.3, 100).tolist() == [0, 2, 4]  # 1/3 > 0.3 now suppresses 3
    assert nms(boxes, scores, classes, 0.9, 100).tolist() == [0, 1, 2, 3, 4]
    assert nms(boxes, scores, classes, 0.45, 2).tolist() == [0, 2]
    assert nms(boxes[:0], scores[:0], classes[:0], 0.45, 100).tolist() == []


def test_nms_many_boxes_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 400, (600, 2))
    wh = rng.uniform(5, 80, (600, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 600).astype(np.float32)
    classes = rng.integers(0, 3, 600)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))

    expected: List[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= 0.5 for k in expected):
            expected.append(int(i))
    assert nms(boxes, scores, classes, 0.5, 10_000).tolist() == expected


# -- thresholds, allow-list, max detections ---------------------------------------------------------------

NAMES = ["person", "car", "dog"]
LB = Letterbox(scale=0.5, pad_x=0.0, pad_y=10.0, source_width=800, source_height=600)


def _boxes() -> Tuple[np.ndarray, List[float], List[int]]:
    # eight separate boxes in model pixels with falling scores, classes cycling person/car/dog
    boxes = np.array([[i * 40, 20, i * 40 + 30, 60] for i in range(8)], dtype=np.float32)
    scores = [0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25]
    classes = [i % 3 for i in range(8)]
    return boxes, scores, classes


@pytest.fixture(scope="module")
def v5_backend(tmp_path_factory: pytest.TempPathFactory) -> OnnxRuntimeBackend:
    path = tmp_path_factory.mktemp("v5") / "v5.onnx"
    g.save_constant_model(path, {"output0": g.yolov5_output(*_boxes(), num_classes=3)})
    return OnnxRuntimeBackend(path)


def _detect(backend: OnnxRuntimeBackend, **cfg: object) -> Tuple[Detection, ...]:
    post = build_postprocessor(ModelConfig(path="m", **cfg), backend, NAMES)  # type: ignore[arg-type]
    return post(backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)}), [LB])[0]


def _scores(dets: Tuple[Detection, ...]) -> List[float]:
    return [round(d.score, 2) for d in dets]


def test_global_threshold(v5_backend: OnnxRuntimeBackend) -> None:
    assert _scores(_detect(v5_backend, score_threshold=0.5)) == [0.95, 0.85, 0.75, 0.65, 0.55]
    assert len(_detect(v5_backend, score_threshold=0.0)) == 8  # background rows have no objectness


def test_per_class_thresholds_by_name(v5_backend: OnnxRuntimeBackend) -> None:
    dets = _detect(v5_backend, score_threshold=0.5, class_thresholds={"car": 0.9, "dog": 0.2})
    # person 0.95, 0.65 (not 0.35 < 0.5); car none (0.85, 0.55, 0.25 < 0.9); dog 0.75 and 0.45 (>= 0.2)
    assert [(d.class_name, round(d.score, 2)) for d in dets] == [
        ("person", 0.95),
        ("dog", 0.75),
        ("person", 0.65),
        ("dog", 0.45),
    ]


def test_allow_list_and_max_detections(v5_backend: OnnxRuntimeBackend) -> None:
    dets = _detect(v5_backend, score_threshold=0.1, classes=["car", "dog"])
    assert {d.class_name for d in dets} == {"car", "dog"} and len(dets) == 5
    assert _scores(_detect(v5_backend, score_threshold=0.1, max_detections=3)) == [0.95, 0.85, 0.75]


def test_boxes_are_mapped_back_and_clipped(v5_backend: OnnxRuntimeBackend) -> None:
    dets = _detect(v5_backend, score_threshold=0.9)
    assert len(dets) == 1
    d = dets[0]
    # model (0, 20, 30, 60) -> source ((x - 0) / 0.5, (y - 10) / 0.5)
    assert (d.x1, d.y1, d.x2, d.y2) == pytest.approx((0.0, 20.0, 60.0, 100.0))
    # a box running out of the source image is clipped to it
    small = Letterbox(scale=0.5, pad_x=0.0, pad_y=10.0, source_width=50, source_height=90)
    post = build_postprocessor(ModelConfig(path="m", score_threshold=0.9), v5_backend, NAMES)
    clipped = post(v5_backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)}), [small])[0][0]
    assert (clipped.x2, clipped.y2) == (50.0, 90.0)


def test_unknown_class_names_in_config_are_reported(v5_backend: OnnxRuntimeBackend) -> None:
    with pytest.raises(
        ModelError, match=r"model.classes: unknown class name\(s\) 'cat' \(the model's classes"
    ):
        build_postprocessor(ModelConfig(path="m", classes=["cat"]), v5_backend, NAMES)
    with pytest.raises(ModelError, match=r"model.class_thresholds: unknown class name\(s\) 'Person'"):
        build_postprocessor(ModelConfig(path="m", class_thresholds={"Person": 0.4}), v5_backend, NAMES)


def test_eval_overrides_replace_config_values(v5_backend: OnnxRuntimeBackend) -> None:
    cfg = ModelConfig(path="m", score_threshold=0.9, max_detections=1)
    post = build_postprocessor(
        cfg, v5_backend, NAMES, score_threshold=0.001, max_detections=100, nms_iou=0.65
    )
    assert isinstance(post, PostProcessor)
    assert (post.score_threshold, post.max_detections, post.nms_iou) == (0.001, 100, 0.65)
    out: Dict[str, np.ndarray] = v5_backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)})
    assert len(post(out, [LB])[0]) == 8
    with pytest.raises(ModelError, match="2 images but the model returned 1"):
        post(out, [LB, LB])
