"""`edgedet quantize` through the real argument parser."""

from __future__ import annotations

from pathlib import Path
from typing import List

import onnx
import pytest

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.cli import main
from edgedet.precision.cli_args import EXIT_BUDGET_NOT_MET


def _run(argv: List[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_int8_and_fp16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nano.int8.onnx"
    code = _run(
        ["quantize", str(DEMO_MODEL), "--calib", str(DEMO_CLIP), "--calib-images", "3", "-o", str(out)]
    )
    assert code == 0 and out.is_file()
    assert "113 of 113 Conv layers in INT8" in capsys.readouterr().out
    assert (tmp_path / "nano.int8.ranges.json").is_file()
    layers = tmp_path / "float.txt"
    layers.write_text("# keep the stem depthwise conv in float\nConv_44\n")
    out2 = tmp_path / "mixed.onnx"
    # ranges reused from the first run: no calibration data needed
    code = _run(
        [
            "quantize",
            str(DEMO_MODEL),
            "--float-layers",
            str(layers),
            "-o",
            str(out2),
            "--ranges",
            str(tmp_path / "nano.int8.ranges.json"),
        ]
    )
    assert code == 0 and "112 of 113" in capsys.readouterr().out
    half = tmp_path / "nano.fp16.onnx"
    assert _run(["quantize", str(DEMO_MODEL), "--precision", "fp16", "-o", str(half)]) == 0
    assert onnx.load(str(half)).graph.initializer[0].data_type in (
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT64,
    )


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["quantize", str(DEMO_MODEL), "--calib", str(tmp_path), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "calibration folder" in capsys.readouterr().err
    assert _run(["quantize", str(DEMO_MODEL), "--precision", "mixed", "--calib", str(DEMO_CLIP)]) == 1
    assert "needs --eval-images and --eval-annotations" in capsys.readouterr().err
    assert _run(["quantize", str(DEMO_MODEL), "-o", str(tmp_path / "y.onnx")]) == 1
    assert "calibration data is needed" in capsys.readouterr().err


@pytest.mark.slow
def test_mixed_search_exit_status(
    tmp_path: Path, coco_mini: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "quantize", str(DEMO_MODEL), "--calib", str(DEMO_CLIP), "--calib-images", "4",
        "--eval-images", str(coco_mini / "images"), "--eval-annotations",
        str(coco_mini / "instances_val2017_mini.json"), "--eval-limit", "4", "--sensitivity-images", "1",
        "--max-map-drop", "0", "--max-steps", "1", "--no-report", "-o", str(tmp_path / "m.onnx"),
    ]  # fmt: skip
    assert _run(argv) == EXIT_BUDGET_NOT_MET
    out = capsys.readouterr().out
    assert "budget NOT met" in out and "float layers:" in out
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.float_layers.json").is_file()
