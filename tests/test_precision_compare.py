"""Side-by-side variant comparison and the agreement score on unlabelled video."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Tuple

import pytest

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.precision.calibration import load_calibration
from edgedet.precision.compare import Variant, compare, match_f1, run_compare_command
from edgedet.precision.errors import PrecisionError
from edgedet.precision.fp16 import convert_fp16
from edgedet.precision.quantize import quantize
from edgedet.types import Detection


def _d(x: float, cls: int = 0, score: float = 0.9, w: float = 10.0) -> Detection:
    return Detection(x, 0.0, x + w, 10.0, score, cls, str(cls))


def test_match_f1() -> None:
    a = [_d(0), _d(50), _d(100, cls=2)]
    assert match_f1(a, list(a)) == 1.0
    assert match_f1([], []) == 1.0
    assert match_f1(a, []) == 0.0 and match_f1([], a) == 0.0
    assert match_f1(a, [_d(0, cls=1)]) == 0.0  # same box, other class
    assert match_f1(a, [_d(1)]) == pytest.approx(2 * 1 / 4)  # IoU 9/11 matches one of three
    assert match_f1(a, [_d(6)]) == 0.0  # IoU 4/16 is below 0.5
    # one reference box cannot be matched twice
    assert match_f1([_d(0)], [_d(0), _d(0.5)]) == pytest.approx(2 * 1 / 3)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("variants")
    fp16 = convert_fp16(DEMO_MODEL, d / "nano.fp16.onnx")
    calib = load_calibration(DEMO_CLIP, DEMO_MODEL, limit=4)
    int8 = quantize(DEMO_MODEL, calib, d / "nano.int8.onnx", "minmax").path
    return DEMO_MODEL, fp16, int8


@pytest.mark.slow
def test_compare_variants(variants: Tuple[Path, Path, Path], coco_mini: Path) -> None:
    fp32, fp16, int8 = variants
    result = compare(
        [
            Variant("FP32", fp32),
            Variant("FP16", fp16),
            Variant("INT8 naive", int8),
            Variant("missing", "/no/such.onnx"),
        ],
        coco_mini / "images",
        coco_mini / "instances_val2017_mini.json",
        video=DEMO_CLIP,
        video_frames=4,
        limit=6,
        threads=2,
    )
    by = {v.name: v for v in result.variants}
    assert result.reference == "FP32" and result.images == 6 and result.video_frames == 4
    assert by["missing"].error is not None and "cannot read" in by["missing"].error
    for name in ("FP32", "FP16", "INT8 naive"):
        v = by[name]
        assert v.error is None and v.map50_95 is not None and v.median_infer_ms is not None
        assert v.size_bytes == Path(v.path).stat().st_size and len(v.per_class_ap) == 80
    assert by["FP32"].agreement == 1.0
    assert by["FP16"].agreement is not None and by["FP16"].agreement > 0.9
    assert abs(by["FP16"].map50_95 - by["FP32"].map50_95) < 0.02  # type: ignore[operator]
    # the naive INT8 model (minmax ranges, every conv) agrees less with FP32 than FP16 does
    assert by["INT8 naive"].agreement is not None and by["INT8 naive"].agreement < by["FP16"].agreement
    assert by["INT8 naive"].precision == "int8"
    losers = result.losers(by["INT8 naive"])
    assert losers and all(d < 0 for _, d in losers)
    table = result.markdown()
    assert table.splitlines()[0].startswith("| variant | mAP@0.5:0.95 | mAP@0.5 | median ms | size MB")
    assert "| FP16 |" in table and "error: cannot read" in table and "agreement (4 frames)" in table


def test_agreement_without_labels(variants: Tuple[Path, Path, Path]) -> None:
    fp32, fp16, _ = variants
    result = compare([Variant("a", fp32), Variant("b", fp16)], video=DEMO_CLIP, video_frames=3)
    by = {v.name: v for v in result.variants}
    assert by["a"].map50_95 is None and by["a"].median_infer_ms is not None
    assert by["b"].agreement is not None and by["b"].agreement > 0.8
    assert "| a | - | - |" in result.markdown()


def test_compare_needs_data(variants: Tuple[Path, Path, Path]) -> None:
    with pytest.raises(PrecisionError, match="labelled images"):
        compare([Variant("a", variants[0])])
    with pytest.raises(PrecisionError, match="unique"):
        compare([Variant("a", variants[0]), Variant("a", variants[1])], video=DEMO_CLIP)


@pytest.mark.slow
def test_eval_command_compares(
    variants: Tuple[Path, Path, Path], coco_mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32, fp16, _ = variants
    args = argparse.Namespace(
        images=coco_mini / "images",
        annotations=coco_mini / "instances_val2017_mini.json",
        limit=3,
        threads=2,
        agreement_video=None,
        report=tmp_path / "cmp.md",
        config=None,
        json=False,
    )
    assert run_compare_command(args, [fp32, fp16]) == 0
    out = capsys.readouterr().out
    assert "| yolox_nano.onnx |" in out and "| nano.fp16.onnx |" in out
    assert (tmp_path / "cmp.md").read_text().startswith("# Model variants on 3 images")
