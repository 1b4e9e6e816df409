"""Preprocessing benchmark: CUDA kernel (with the upload from pinned memory) against the CPU reference.

    python -m edgedet.preprocess.bench                      # 1920x1080 frame -> 640x640, float16
    python -m edgedet.preprocess.bench --source 1280x720 --input 416x416 --dtype float32 --json

Prints the median and p90 per frame of: the CPU path (CpuPreprocessor: cv2.resize + numpy), the CUDA
path from a pinned frame buffer (upload + kernel, wall time of ``run()`` and GPU time from events), from a
mapped (zero-copy) buffer, and from ordinary pageable memory; then the speed-up of the pinned CUDA path
over the CPU path. Targets (issue 4): <= 0.5 ms per 1080p frame to 640x640, >= 20x the CPU path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedet.assets import DEMO_CLIP
from edgedet.cudart import open_runtime
from edgedet.errors import require
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.preprocess.cuda import CudaPreprocessor
from edgedet.types import ChannelOrder, InputSpec


def _size(text: str) -> Tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc


def _frame(width: int, height: int, video: Optional[Path]) -> np.ndarray:
    """A real frame (demo clip or --video) scaled to the source size; noise if no video can be read."""
    cv2: Any = require("cv2", "cv", "the preprocessing benchmark")

    path = video or DEMO_CLIP
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    if not ok or frame is None:
        return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(frame)


def _measure(fn: Callable[[], Any], iters: int, warmup: int = 10) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _stats(samples: Sequence[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min_ms": ordered[0],
    }


def run_benchmark(
    source: Tuple[int, int],
    model_input: Tuple[int, int],
    dtype: str,
    iters: int,
    video: Optional[Path] = None,
    device: int = 0,
    cpu_threads: Optional[int] = None,
) -> Dict[str, Any]:
    cv2: Any = require("cv2", "cv", "the preprocessing benchmark")

    if cpu_threads is not None:
        cv2.setNumThreads(cpu_threads)

    spec = InputSpec(
        name="images", width=model_input[0], height=model_input[1], channel_order=ChannelOrder.RGB,
        scale=1.0 / 255.0, dtype=dtype,
    )  # fmt: skip
    image = _frame(source[0], source[1], video)
    results: Dict[str, Any] = {
        "source": f"{source[0]}x{source[1]}",
        "input": f"{model_input[0]}x{model_input[1]}",
        "dtype": dtype,
        "iters": iters,
        "cv2_threads": cv2.getNumThreads(),
    }

    cpu = CpuPreprocessor(spec)
    cpu_out = cpu.allocate()
    results["cpu"] = _stats(_measure(lambda: cpu.run(image, cpu_out), iters))

    runtime = open_runtime(device)
    results["device"] = (
        f"{runtime.device_name} (sm_{runtime.compute_capability[0]}{runtime.compute_capability[1]})"
    )
    gpu = CudaPreprocessor(spec, runtime=runtime, timing=True)
    out = gpu.allocate()
    pinned = gpu.frame_buffer(source[0], source[1], mapped=False)
    pinned[...] = image
    mapped = gpu.frame_buffer(source[0], source[1], mapped=True)
    mapped[...] = image

    gpu_ms: List[float] = []

    def pinned_run() -> None:
        gpu.run(pinned, out)
        gpu_ms.append(gpu.last_timing_ms.get("gpu_ms", float("nan")))

    results["cuda_pinned"] = _stats(_measure(pinned_run, iters))
    results["cuda_pinned_gpu"] = _stats(gpu_ms[-iters:])
    same = np.array_equal(out.to_host(), cpu_out)
    results["cuda_mapped"] = _stats(_measure(lambda: gpu.run(mapped, out), iters))
    results["cuda_staged"] = _stats(_measure(lambda: gpu.run(image, out), iters))  # the default
    staged_same = np.array_equal(out.to_host(), cpu_out)
    gpu.stage_frames = False
    results["cuda_pageable"] = _stats(_measure(lambda: gpu.run(image, out), iters))
    gpu.stage_frames = True
    results["identical_to_cpu"] = bool(same and staged_same and np.array_equal(out.to_host(), cpu_out))
    results["speedup_pinned_vs_cpu"] = results["cpu"]["median_ms"] / results["cuda_pinned"]["median_ms"]
    out.free()
    gpu.close()
    return results


def _print(r: Dict[str, Any]) -> None:
    print(f"preprocess {r['source']} -> {r['input']} {r['dtype']} on {r['device']}, {r['iters']} frames")
    print(f"  cv2 threads: {r['cv2_threads']}")
    rows = [
        ("CPU (cv2.resize + numpy)", r["cpu"]),
        ("CUDA from pinned (upload+kernel, wall)", r["cuda_pinned"]),
        ("CUDA from pinned (GPU events)", r["cuda_pinned_gpu"]),
        ("CUDA from mapped (zero-copy)", r["cuda_mapped"]),
        ("CUDA, decoded frame via pinned staging", r["cuda_staged"]),
        ("CUDA from pageable memory (driver)", r["cuda_pageable"]),
    ]
    for label, s in rows:
        print(f"  {label:<40} median {s['median_ms']:8.3f} ms   p90 {s['p90_ms']:8.3f} ms")
    print(f"  speed-up, CUDA pinned vs CPU: {r['speedup_pinned_vs_cpu']:.1f}x")
    print(f"  CUDA output identical to the CPU reference: {r['identical_to_cpu']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgedet.preprocess.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source", type=_size, default=(1920, 1080), help="source frame WxH (1920x1080)")
    parser.add_argument("--input", type=_size, default=(640, 640), help="model input WxH (640x640)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--video", type=Path, help="take the frame from this video (default: demo clip)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--cpu-threads", type=int, help="OpenCV threads for the CPU path (default: OpenCV's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    results = run_benchmark(
        args.source, args.input, args.dtype, args.iters, args.video, args.device, args.cpu_threads
    )
    if args.json:
        print(json.dumps(results))
    else:
        _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
