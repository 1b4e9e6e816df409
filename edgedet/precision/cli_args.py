"""Arguments and handler of `edgedet quantize` (wired by edgedet/cli.py in one line each).

    edgedet quantize MODEL --calib DATA [-o OUT] [--precision int8|mixed|fp16] [--method mse|...]
        [--eval-images DIR --eval-annotations JSON] [--max-map-drop 0.01] ...

``--precision`` defaults to ``mixed`` when evaluation data is given, else ``int8``. Exit status: 0 done,
3 when the mixed-precision budget was not met (the best model found is written anyway), 1/2 on errors.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

from edgedet.precision.errors import PrecisionError
from edgedet.precision.fp16 import convert_fp16
from edgedet.precision.quantize import quantize, read_float_layers
from edgedet.precision.ranges import METHODS
from edgedet.precision.sensitivity import search

log = logging.getLogger(__name__)

EXIT_BUDGET_NOT_MET = 3


def add_quantize_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, help="FP32 ONNX model (a Q/DQ model from QAT is copied unchanged)"
    )
    parser.add_argument(
        "--calib",
        default=None,
        help="calibration data: image folder, folder of .npy input tensors, video file, rtsp:// URL or "
        "/dev/videoN (needed for int8/mixed unless --ranges holds this model's ranges)",
    )
    parser.add_argument("--calib-images", type=int, default=128, help="at most this many calibration inputs")
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="output ONNX (default: MODEL.int8.onnx / MODEL.fp16.onnx)",
    )
    parser.add_argument(
        "--precision",
        choices=["int8", "mixed", "fp16"],
        default=None,
        help="int8: every Conv quantized (minus --float-layers); mixed: sensitivity search (needs "
        "--eval-images/--eval-annotations; the default when they are given); fp16: FP16 weights/activations",
    )
    parser.add_argument(
        "--method",
        choices=list(METHODS),
        default="percentile",
        help="activation range calibration (default percentile)",
    )
    parser.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    parser.add_argument(
        "--float-layers", type=Path, default=None, help="int8: keep the layers of this list in float"
    )
    parser.add_argument(
        "--ranges",
        type=Path,
        default=None,
        help="calibration statistics: written here (default: beside the output); read from here when --calib "
        "is not given, to try other --method or --float-layers without calibrating again",
    )
    parser.add_argument("--eval-images", type=Path, default=None, help="mixed: labelled image folder")
    parser.add_argument("--eval-annotations", type=Path, default=None, help="mixed: COCO instances JSON")
    parser.add_argument("--eval-limit", type=int, default=None, help="mixed: use only the first N images")
    parser.add_argument(
        "--max-map-drop", type=float, default=0.01, help="mixed: allowed mAP@0.5:0.95 loss vs FP32 (absolute)"
    )
    parser.add_argument("--max-steps", type=int, default=40, help="mixed: at most this many evaluations")
    parser.add_argument("--time-limit", type=float, default=30.0, help="mixed: minutes for the whole search")
    parser.add_argument(
        "--sensitivity-images", type=int, default=16, help="mixed: calibration images per layer sensitivity"
    )
    parser.add_argument("--no-report", action="store_true", help="mixed: skip the Markdown/PNG report")


def _default_output(model: Path, precision: str) -> Path:
    suffix = "fp16" if precision == "fp16" else "int8"
    return model.with_name(f"{model.stem}.{suffix}.onnx")


def run_quantize(args: argparse.Namespace) -> int:
    precision: Optional[str] = args.precision
    has_eval = args.eval_images is not None or args.eval_annotations is not None
    if precision is None:
        precision = "mixed" if has_eval else "int8"
    out: Path = args.output or _default_output(args.model, precision)
    if precision == "fp16":
        path = convert_fp16(args.model, out)
        print(f"wrote {path} (FP16, float32 inputs/outputs)")
        return 0
    ranges = args.ranges or out.with_suffix(".ranges.json")
    if precision == "int8":
        floats = read_float_layers(args.float_layers) if args.float_layers else []
        result = quantize(
            args.model,
            args.calib,
            out,
            args.method,
            percentile=args.percentile,
            float_layers=floats,
            calib_images=args.calib_images,
            ranges_path=ranges,
        )
        print(result.message)
        return 0
    if args.eval_images is None or args.eval_annotations is None:
        raise PrecisionError(
            "--precision mixed needs --eval-images and --eval-annotations (labelled COCO data)"
        )
    if args.calib is None:
        raise PrecisionError(
            "--precision mixed needs --calib (calibration images for the sensitivity analysis)"
        )

    found = search(
        args.model,
        args.calib,
        args.eval_images,
        args.eval_annotations,
        out,
        max_map_drop=args.max_map_drop,
        method=args.method,
        percentile=args.percentile,
        calib_images=args.calib_images,
        sensitivity_images=args.sensitivity_images,
        eval_limit=args.eval_limit,
        max_steps=args.max_steps,
        time_limit_s=args.time_limit * 60.0,
        ranges_path=ranges,
        report=not args.no_report,
    )
    print(found.message)
    print(f"  Q/DQ model:   {found.qdq_path}")
    print(f"  float layers: {found.float_layers_path} ({len(found.float_layers)})")
    if found.report_path is not None:
        print(
            f"  report:       {found.report_path}" + (f" + {found.plot_path.name}" if found.plot_path else "")
        )
    return 0 if found.within_budget else EXIT_BUDGET_NOT_MET
