"""Every output layout, through real ONNX models, the real ONNX Runtime backend and the real preprocessor.

Small constant-output models emit known boxes in each family's layout; the detections must come back in
source pixels of a letterboxed non-square (16:9) image. YOLOX is tested with the real model on a real
COCO image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.errors import ModelError
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import build_postprocessor, input_spec_for
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.types import ChannelOrder, Detection, InputSpec, Letterbox
from tests.support import onnx_graphs as g

SRC_W, SRC_H = 1280, 720
# x1, y1, x2, y2 in source pixels, score, class id
KNOWN: List[Tuple[float, float, float, float, float, int]] = [
    (100.0, 50.0, 400.0, 600.0, 0.9, 0),
    (700.0, 200.0, 1000.0, 500.0, 0.8, 2),
    (1100.0, 600.0, 1270.0, 715.0, 0.6, 1),
]
NAMES = ["cat", "dog", "bird"]


def _letterbox(center: bool) -> Letterbox:
    spec = InputSpec(name="images", width=416, height=416, center=center)
    pre = CpuPreprocessor(spec)
    return pre.run(np.zeros((SRC_H, SRC_W, 3), np.uint8), pre.allocate())


def _known_in_model(letterbox: Letterbox) -> Tuple[np.ndarray, List[float], List[int]]:
    boxes = g.to_model_pixels([k[:4] for k in KNOWN], letterbox)
    return boxes, [k[4] for k in KNOWN], [k[5] for k in KNOWN]


LAYOUTS: Dict[str, Callable[[np.ndarray, List[float], List[int]], Dict[str, np.ndarray]]] = {
    "yolov5": lambda b, s, c: {"output0": g.yolov5_output(b, s, c, num_classes=3)},
    "yolov8": lambda b, s, c: {"output0": g.yolov8_output(b, s, c, num_classes=3)},
    "efficient_nms": lambda b, s, c: g.efficient_nms_outputs(b, s, c),
    "end2end": lambda b, s, c: {"output0": g.end2end_output(b, s, c)},
}
FAMILY = {
    "yolov5": "yolov5",
    "yolov8": "yolov8",
    "efficient_nms": "efficient_nms",
    "end2end": "efficient_nms",
}


def _run(backend: OnnxRuntimeBackend, cfg: ModelConfig, image: np.ndarray) -> Tuple[Detection, ...]:
    post = build_postprocessor(cfg, backend, NAMES)
    spec = input_spec_for(cfg, backend, post.family)
    pre = CpuPreprocessor(spec)
    buf = pre.allocate()
    letterbox = pre.run(image, buf)
    return post(backend.infer({spec.name: buf}), [letterbox])[0]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_boxes_come_back_in_source_pixels(tmp_path: Path, layout: str) -> None:
    letterbox = _letterbox(center=True)  # every non-YOLOX family centres the letterbox
    assert letterbox.pad_y > 0 and letterbox.pad_x == 0  # a 16:9 source really is letterboxed
    model = g.save_constant_model(tmp_path / f"{layout}.onnx", LAYOUTS[layout](*_known_in_model(letterbox)))
    backend = OnnxRuntimeBackend(model)
    cfg = ModelConfig(path=str(model), score_threshold=0.25)
    post = build_postprocessor(cfg, backend, NAMES)
    assert post.family == FAMILY[layout]

    dets = _run(backend, cfg, np.full((SRC_H, SRC_W, 3), 60, np.uint8))

    assert len(dets) == len(KNOWN)
    for det, (x1, y1, x2, y2, score, cls) in zip(dets, KNOWN):  # best score first
        assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx((x1, y1, x2, y2), abs=0.05)
        assert det.score == pytest.approx(score, abs=1e-5)
        assert det.class_id == cls and det.class_name == NAMES[cls]


def test_family_preprocessing_conventions(tmp_path: Path) -> None:
    letterbox = _letterbox(center=True)
    model = g.save_constant_model(tmp_path / "v8.onnx", LAYOUTS["yolov8"](*_known_in_model(letterbox)))
    backend = OnnxRuntimeBackend(model)
    cfg = ModelConfig(path=str(model))
    spec = input_spec_for(cfg, backend, "yolov8")
    assert (spec.channel_order, spec.scale, spec.center, spec.pad_value) == (
        ChannelOrder.RGB,
        pytest.approx(1 / 255),
        True,
        114.0,
    )
    assert (spec.name, spec.width, spec.height, spec.dtype) == ("images", 416, 416, "float32")
    yolox = input_spec_for(cfg, backend, "yolox")
    assert (yolox.channel_order, yolox.scale, yolox.center) == (ChannelOrder.BGR, 1.0, False)
    custom = ModelConfig(
        path="m",
        channel_order="bgr",
        scale=0.5,
        mean=(1.0, 2.0, 3.0),
        std=(2.0, 2.0, 2.0),
        letterbox_center=False,
        pad_value=0,
    )
    spec = input_spec_for(custom, backend, "yolov8")
    assert (spec.channel_order, spec.scale, spec.mean, spec.std, spec.center, spec.pad_value) == (
        ChannelOrder.BGR,
        0.5,
        (1.0, 2.0, 3.0),
        (2.0, 2.0, 2.0),
        False,
        0.0,
    )


def test_ultralytics_metadata_names_are_used(tmp_path: Path) -> None:
    letterbox = _letterbox(center=True)
    outputs = LAYOUTS["yolov8"](*_known_in_model(letterbox))
    model = g.save_constant_model(
        tmp_path / "v8.onnx",
        outputs,
        metadata={"names": "{0: 'cow', 1: 'horse', 2: 'sheep'}", "task": "detect"},
    )
    backend = OnnxRuntimeBackend(model)
    assert backend.metadata["task"] == "detect"
    cfg = ModelConfig(path=str(model))
    post = build_postprocessor(cfg, backend)
    assert post.class_names == ["cow", "horse", "sheep"]
    spec = input_spec_for(cfg, backend, post.family)
    pre = CpuPreprocessor(spec)
    buf = pre.allocate()
    dets = post(backend.infer({"images": buf}), [pre.run(np.zeros((SRC_H, SRC_W, 3), np.uint8), buf)])[0]
    assert [d.class_name for d in dets] == ["cow", "sheep", "horse"]


def test_ultralytics_non_detect_task_is_refused(tmp_path: Path) -> None:
    outputs = LAYOUTS["yolov8"](*_known_in_model(_letterbox(center=True)))
    model = g.save_constant_model(tmp_path / "seg.onnx", outputs, metadata={"task": "segment"})
    with pytest.raises(ModelError, match="'segment' model"):
        build_postprocessor(ModelConfig(path=str(model)), OnnxRuntimeBackend(model))


def test_outputs_matching_no_decoder_is_a_clear_error(tmp_path: Path) -> None:
    model = g.save_constant_model(tmp_path / "classifier.onnx", g.bad_layout_outputs())
    backend = OnnxRuntimeBackend(model)
    with pytest.raises(ModelError) as err:
        build_postprocessor(ModelConfig(path=str(model)), backend)
    message = str(err.value)
    assert message == (
        "model outputs [logits [1, 1000]] match no decoder; set model.family "
        "(yolox, yolov5, yolov8, efficient_nms)"
    )


def test_forced_family_that_does_not_fit_names_the_layout(tmp_path: Path) -> None:
    letterbox = _letterbox(center=True)
    model = g.save_constant_model(
        tmp_path / "nms.onnx", LAYOUTS["efficient_nms"](*_known_in_model(letterbox))
    )
    backend = OnnxRuntimeBackend(model)
    with pytest.raises(ModelError, match=r"model.family yolov8 expects one output \[B, 4 \+ C, N\]"):
        build_postprocessor(ModelConfig(path=str(model), family="yolov8"), backend)
    with pytest.raises(ModelError, match=r"model.family yolox expects"):
        build_postprocessor(ModelConfig(path=str(model), family="yolox"), backend)


def test_dynamic_input_size_needs_model_input_size(tmp_path: Path) -> None:
    outputs = LAYOUTS["yolov5"](*_known_in_model(_letterbox(center=True)))
    model = g.save_constant_model(tmp_path / "dyn.onnx", outputs, input_shape=(1, 3, None, None))
    backend = OnnxRuntimeBackend(model)
    with pytest.raises(ModelError, match=r"dynamic size; set model.input_size"):
        build_postprocessor(ModelConfig(path=str(model)), backend)
    cfg = ModelConfig(path=str(model), input_size=(416, 416))
    post = build_postprocessor(cfg, backend, NAMES)
    assert input_spec_for(cfg, backend, post.family).width == 416


def test_nhwc_input_is_refused(tmp_path: Path) -> None:
    outputs = LAYOUTS["yolov5"](*_known_in_model(_letterbox(center=True)))
    model = g.save_constant_model(tmp_path / "nhwc.onnx", outputs, input_shape=(1, 416, 416, 3))
    with pytest.raises(ModelError, match="is NHWC"):
        build_postprocessor(ModelConfig(path=str(model)), OnnxRuntimeBackend(model))


# -- the real YOLOX model --------------------------------------------------------------------------------


def _iou(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_yolox_finds_the_annotated_person(coco_mini: Path) -> None:
    # 000000151938.jpg is 470x640 (portrait: padded on the right); the annotation has a person at
    # x=320, y=0.83, w=150, h=630 (COCO instances_val2017)
    image = cv2.imread(str(coco_mini / "images" / "000000151938.jpg"))
    assert image is not None and image.shape[:2] == (640, 470)
    backend = OnnxRuntimeBackend(DEMO_MODEL, threads=2)
    cfg = ModelConfig(path=str(DEMO_MODEL), score_threshold=0.25)
    post = build_postprocessor(cfg, backend)
    assert post.family == "yolox" and post.class_names[0] == "person" and len(post.class_names) == 80
    dets = _run_default(backend, cfg, image)
    truth = (320.0, 0.83, 470.0, 630.83)
    persons = [d for d in dets if d.class_name == "person"]
    best = max(_iou((d.x1, d.y1, d.x2, d.y2), truth) for d in persons)
    assert best > 0.8
    for d in dets:  # inside the source image
        assert 0 <= d.x1 < d.x2 <= 470 and 0 <= d.y1 < d.y2 <= 640


def _run_default(backend: OnnxRuntimeBackend, cfg: ModelConfig, image: np.ndarray) -> Tuple[Detection, ...]:
    post = build_postprocessor(cfg, backend)
    spec = input_spec_for(cfg, backend, post.family)
    pre = CpuPreprocessor(spec)
    buf = pre.allocate()
    letterbox = pre.run(image, buf)
    return post(backend.infer({spec.name: buf}), [letterbox])[0]


def test_yolox_demo_frame_has_people_and_allow_list_filters(tmp_path: Path) -> None:
    cap = cv2.VideoCapture(str(DEMO_MODEL.parent / "demo_street.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (480, 640, 3)
    backend = OnnxRuntimeBackend(DEMO_MODEL, threads=2)
    dets = _run_default(backend, ModelConfig(path=str(DEMO_MODEL)), frame)
    assert any(d.class_name == "person" for d in dets)
    only_cars = _run_default(backend, ModelConfig(path=str(DEMO_MODEL), classes=["car"]), frame)
    assert all(d.class_name == "car" for d in only_cars)
    assert len(only_cars) < len(dets)


def test_batched_outputs_give_one_tuple_per_image(tmp_path: Path) -> None:
    letterbox = _letterbox(center=True)
    boxes, scores, classes = _known_in_model(letterbox)
    first = g.yolov5_output(boxes, scores, classes, num_classes=3)
    second = g.yolov5_output(boxes[:1], scores[:1], classes[:1], num_classes=3)
    model = g.save_constant_model(
        tmp_path / "b2.onnx", {"output0": np.concatenate([first, second])}, input_shape=(2, 3, 416, 416)
    )
    backend = OnnxRuntimeBackend(model)
    cfg = ModelConfig(path=str(model))
    post = build_postprocessor(cfg, backend, NAMES)
    spec = input_spec_for(cfg, backend, post.family)
    assert spec.batch == 2
    outputs = backend.infer({"images": np.zeros((2, 3, 416, 416), np.float32)})
    small = Letterbox(
        scale=letterbox.scale / 2, pad_x=0.0, pad_y=letterbox.pad_y, source_width=2560, source_height=1440
    )
    a, b = post(outputs, [letterbox, small])
    assert [d.class_id for d in a] == [0, 2, 1] and len(b) == 1
    assert (b[0].x1, b[0].x2) == pytest.approx((200.0, 800.0), abs=0.1)  # half the scale: twice the size
    assert len(post(outputs, [letterbox])) == 1  # fewer images than the model's fixed batch


def test_yolox_export_with_decoding_inside_is_recognised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # YOLOX exported with decode_in_inference: [1, 3549, 5 + C] rows already in pixels, top-left letterbox
    letterbox = _letterbox(center=False)
    out = g.yolov5_output(*_known_in_model(letterbox), num_classes=3, rows=3549)
    out[0, len(KNOWN) :, 2:4] = 30.0  # background boxes of plausible pixel size
    model = g.save_constant_model(tmp_path / "yolox_decoded.onnx", {"output": out})
    backend = OnnxRuntimeBackend(model)
    cfg = ModelConfig(path=str(model), score_threshold=0.25)
    assert build_postprocessor(cfg, backend, NAMES).family == "yolox"
    dets = _run(backend, cfg, np.zeros((SRC_H, SRC_W, 3), np.uint8))
    assert "already decoded" in caplog.text
    got = [v for d in dets for v in (d.x1, d.y1, d.x2, d.y2)]
    assert got == pytest.approx([v for k in KNOWN for v in k[:4]], abs=0.05)
