"""COCO evaluation: the FP32 YOLOX-Nano accuracy bar, category-id mapping, and bad evaluation data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.models.labels import COCO80, COCO80_CATEGORY_IDS
from edgedet.precision.coco import EvalError, category_map, coco_detections
from edgedet.precision.evaluate import evaluate
from edgedet.types import Detection


def _ann(coco_mini: Path) -> Path:
    return coco_mini / "instances_val2017_mini.json"


@pytest.mark.slow
def test_fp32_yolox_nano_map_on_coco_mini(coco_mini: Path) -> None:
    calls: List[Tuple[int, int]] = []
    result = evaluate(
        DEMO_MODEL,
        coco_mini / "images",
        _ann(coco_mini),
        threads=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    print(
        f"mAP@0.5:0.95 {result.map50_95:.4f} mAP@0.5 {result.map50:.4f} "
        f"median infer {result.median_infer_ms:.1f} ms"
    )
    # reference script: 0.313 / 0.498 (shared/docs/reference-measurements.md); < 0.30 means a
    # preprocessing or decoding bug
    assert result.map50_95 >= 0.30
    assert result.map50 >= 0.48
    assert result.images == 79 and calls[-1] == (79, 79) and len(calls) == 79
    assert (result.family, result.precision) == ("yolox", "fp32")
    assert result.per_class_ap["person"] is not None and result.per_class_ap["person"] > 0.3
    assert len(result.per_class_ap) == 80
    assert result.median_infer_ms > 0 and "Average Precision" in result.summary
    assert json.loads(json.dumps(result.to_dict()))["images"] == 79


def test_eval_with_an_open_backend_and_a_limit(coco_mini: Path) -> None:
    backend = OnnxRuntimeBackend(DEMO_MODEL, threads=2)
    result = evaluate(DEMO_MODEL, coco_mini / "images", _ann(coco_mini), backend=backend, limit=5)
    assert result.images == 5 and result.detections > 0
    assert 0.0 < result.map50_95 <= 1.0
    # the caller's backend stays open
    assert backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)})


def test_coco_category_ids_have_gaps() -> None:
    categories = [{"id": i, "name": n} for i, n in zip(COCO80_CATEGORY_IDS, COCO80)]
    mapping = category_map(COCO80, categories)
    assert mapping[0] == 1 and mapping[11] == 13 and mapping[79] == 90
    # names that do not match but the same count: by position in id order
    assert category_map([f"c{i}" for i in range(80)], categories)[12] == 14
    # a model with other classes: only the matching names are scored
    assert category_map(["forklift", "person"], categories) == {1: 1}
    det = Detection(10.0, 20.0, 110.5, 70.25, 0.87654321, 11, "stop sign")
    assert coco_detections([det, Detection(0, 0, 1, 1, 0.5, 0, "x")], 42, {11: 13}) == [
        {"image_id": 42, "category_id": 13, "bbox": [10.0, 20.0, 100.5, 50.25], "score": 0.87654}
    ]


def test_bad_evaluation_data(tmp_path: Path, coco_mini: Path) -> None:
    images = coco_mini / "images"
    with pytest.raises(EvalError, match="image folder not found"):
        evaluate(DEMO_MODEL, tmp_path / "nope", _ann(coco_mini))
    with pytest.raises(EvalError, match="annotation file not found"):
        evaluate(DEMO_MODEL, images, tmp_path / "nope.json")
    not_coco = tmp_path / "x.json"
    not_coco.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(EvalError, match="is not a COCO instances annotation file"):
        evaluate(DEMO_MODEL, images, not_coco)
    few = tmp_path / "few"
    few.mkdir()
    shutil.copy(images / "000000000139.jpg", few)
    with pytest.raises(EvalError, match=r"78 of 79 annotated images are not in .*few"):
        evaluate(DEMO_MODEL, few, _ann(coco_mini))
