"""Sensitivity-guided mixed precision on the real model and real COCO images (small subsets: the full
search is the benchmark in tools/, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.backends.tensorrt.layers import load_layer_list
from edgedet.precision import quantize as q
from edgedet.precision.calibration import CalibrationSet, load_calibration
from edgedet.precision.errors import PrecisionError
from edgedet.precision.evaluate import evaluate
from edgedet.precision.result import LayerSensitivity
from edgedet.precision.sensitivity import _growth, output_error, priority_order, search

EVAL_IMAGES = 10


@pytest.fixture(scope="module")
def calib() -> CalibrationSet:
    return load_calibration(DEMO_CLIP, DEMO_MODEL, limit=8)


def _ann(coco_mini: Path) -> Path:
    return coco_mini / "instances_val2017_mini.json"


@pytest.mark.slow
def test_search_finds_and_measures_a_mixed_model(
    calib: CalibrationSet, coco_mini: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nano.int8.onnx"
    result = search(
        DEMO_MODEL,
        calib,
        coco_mini / "images",
        _ann(coco_mini),
        out,
        max_map_drop=0.05,
        sensitivity_images=2,
        eval_limit=EVAL_IMAGES,
        candidates=["Conv_41", "Conv_44", "Conv_47", "Conv_70"],
    )
    assert result.eval_images == EVAL_IMAGES and result.calib_images == 8
    # the stem depthwise conv is by far the most sensitive layer and ends up in float
    ranked = sorted(result.sensitivities, key=lambda s: -s.error)
    assert ranked[0].name == "Conv_44"
    assert result.within_budget and "Conv_44" in result.float_layers
    # the reported mAP is the written model's, computed again here
    again = evaluate(out, coco_mini / "images", _ann(coco_mini), limit=EVAL_IMAGES)
    assert again.map50_95 == pytest.approx(result.map50_95, abs=1e-9)
    assert result.map50_95 >= result.fp32_map50_95 - 0.05
    model = q.load_model(DEMO_MODEL)
    layers = q.conv_layers(q.prepare(model), model)
    assert result.int8_mac_share == pytest.approx(q.int8_share(layers, set(result.float_layers)))
    assert result.int8_mac_share > 0.95
    # the step list starts with FP32 and the all-INT8 model, which loses a lot
    assert [s.phase for s in result.steps[:2]] == ["fp32", "int8"]
    assert result.steps[1].map50_95 < 0.8 * result.fp32_map50_95
    # side files: float-layer list for the engine builder, ranges, search log, report + plot
    assert list(load_layer_list(result.float_layers_path)) == result.float_layers
    meta = json.loads(result.float_layers_path.read_text())
    assert meta["model_sha256"] == q.file_sha256(DEMO_MODEL) and meta["qdq_model"] == out.name
    assert result.ranges_path.is_file() and (tmp_path / "nano.int8.search.json").is_file()
    assert result.report_path is not None and result.plot_path is not None
    md = result.report_path.read_text()
    assert "| step | phase |" in md and "Conv_44" in md and result.plot_path.name in md
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_too_strict_budget_ends_with_the_best_model(
    calib: CalibrationSet, coco_mini: Path, tmp_path: Path
) -> None:
    out = tmp_path / "strict.onnx"
    # only harmless layers may go back to float, so no step can recover from the collapsed depthwise conv
    result = search(
        DEMO_MODEL,
        calib,
        coco_mini / "images",
        _ann(coco_mini),
        out,
        max_map_drop=0.0,
        max_steps=2,
        sensitivity_images=1,
        eval_limit=EVAL_IMAGES,
        candidates=["Conv_41", "Conv_47"],
        report=False,
    )
    assert not result.within_budget
    assert "budget NOT met (step limit (2) reached)" in result.message
    assert "written anyway" in result.message
    trials = [s for s in result.steps if s.phase != "fp32"]
    assert len(trials) == 2
    best = max(trials, key=lambda s: s.map50_95)
    assert result.map50_95 == best.map50_95 and out.is_file()
    assert result.report_path is None


def test_search_refuses_an_already_quantized_model(calib: CalibrationSet, tmp_path: Path) -> None:
    qdq = q.quantize(DEMO_MODEL, calib, tmp_path / "q.onnx", ranges_path=tmp_path / "r.json").path
    with pytest.raises(PrecisionError, match="already quantized"):
        search(qdq, calib, tmp_path, tmp_path / "a.json", tmp_path / "out.onnx")


def test_priority_puts_cheap_harmful_layers_first() -> None:
    sens = [
        LayerSensitivity("big_harmful", "big_harmful", 1_000_000, False, 0.5),
        LayerSensitivity("small_harmful", "small_harmful", 10_000, True, 0.4),
        LayerSensitivity("typical", "typical", 500, False, 0.01),
        LayerSensitivity("quiet", "quiet", 100, False, 0.005),
        LayerSensitivity("median", "median", 100, False, 0.01),
    ]
    assert [s.name for s in priority_order(sens)] == [
        "small_harmful",
        "big_harmful",
        "typical",
        "median",
        "quiet",
    ]


def test_growth_schedule() -> None:
    assert _growth(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert _growth(1) == [1]


def test_output_error_is_per_column_normalised() -> None:
    rng = np.random.default_rng(1)
    ref = [rng.normal(size=(1, 100, 6)).astype(np.float32)]
    ref[0][..., 0] *= 1000.0  # a column in large units must not dominate
    same = [ref[0].copy()]
    assert output_error(ref, same) == 0.0
    noisy = [ref[0].copy()]
    noisy[0][..., 1] += 0.1
    err = output_error(ref, noisy)
    assert 0.0 < err < 0.01
