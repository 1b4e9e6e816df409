"""Benchmark of issue 7: the mixed-precision search on YOLOX-Nano and the FP32/FP16/INT8 table.

    python -m edgedet.precision.benchmark [--shared ../shared] [--out DIR] [--skip-search]

Runs, with the shared assets: the one-command search (``edgedet quantize ... --eval-images ...``), the FP16
conversion, the naive INT8 model (min/max ranges, every Conv quantized) and the comparison of the four
variants on the labelled mini set plus agreement on the bundled street clip. Prints every figure and
writes ``DIR/benchmark.md``. Not a test: it takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import List, Optional

from edgedet.assets import DEMO_CLIP
from edgedet.precision.compare import Variant, compare
from edgedet.precision.fp16 import convert_fp16
from edgedet.precision.quantize import quantize
from edgedet.precision.sensitivity import search

log = logging.getLogger(__name__)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared")
    parser.add_argument("--out", type=Path, default=Path("bench-quantize"))
    parser.add_argument("--method", default="percentile")
    parser.add_argument("--skip-search", action="store_true", help="reuse DIR/yolox_nano.int8.onnx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("edgedet.backends.onnxruntime", "edgedet.models.postprocess", "edgedet.precision.evaluate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model = args.shared / "models" / "yolox_nano.onnx"
    calib = args.shared / "data" / "coco-val2017-calib"
    mini = args.shared / "data" / "coco-val2017-mini"
    images, annotations = mini / "images", mini / "instances_val2017_mini.json"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    mixed = out / "yolox_nano.int8.onnx"
    lines: List[str] = ["# edgedet quantization benchmark (YOLOX-Nano, ONNX Runtime CPU)", ""]
    if not args.skip_search:
        started = time.monotonic()
        result = search(model, calib, images, annotations, mixed, method=args.method, calib_images=128)
        took = time.monotonic() - started
        print(f"search: {took:.0f} s; {result.message}")
        lines += [
            f"Search: {took:.0f} s wall on this machine; {result.message}.",
            f"Float layers: {', '.join(result.float_layers) or 'none'}.",
            "",
        ]
    fp16 = convert_fp16(model, out / "yolox_nano.fp16.onnx")
    naive = quantize(
        model,
        calib,
        out / "yolox_nano.int8-naive.onnx",
        "minmax",
        ranges_path=out / "yolox_nano.int8.ranges.json",
    )
    table = compare(
        [
            Variant("FP32", model),
            Variant("FP16", fp16),
            Variant("INT8 naive (minmax, all convs)", naive.path),
            Variant("INT8 mixed", mixed),
        ],
        images,
        annotations,
        video=DEMO_CLIP,
        video_frames=30,
    )
    md = table.markdown()
    print(md)
    lines += [
        md,
        "",
        "median ms: ONNX Runtime CPU inference only; agreement: F1 vs FP32 on demo_street.mp4.",
        "",
    ]
    (out / "benchmark.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "benchmark.json").write_text(json.dumps(table.to_dict(), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
