#!/usr/bin/env python3
"""The daemon's pipeline end to end on a GPU for N seconds, through the TensorRT double, and its
agreement with the CPU path on the same frames. Run on the lent GPU machine by tools/gpu_device_check.sh:

    python3 tests/gpu/daemon_agreement.py --seconds 60 --json out/agreement.json

Two cameras (the demo clip twice, looped, as fast as inference takes them), ``max_batch: 2`` (a
dynamic-batch copy of the demo model), CUDA preprocessing, two slots in flight, MQTT off. The TensorRT
double computes with ONNX Runtime from device memory (it reads the input tensors the preprocessing
kernel wrote and writes the outputs the real backend downloads). Every result
is then recomputed on the CPU path (OpenCV preprocessing + ONNX Runtime + the same decoder) for the very
frame it came from (camera, frame number); a frame agrees when both have the same number of detections
and each pairs with one of the same class, box corners within 1 px and score within 0.01.

From the daemon's own path it prints, per camera, how many frames the CUDA preprocessor took from the
pinned frame buffers the sources decode into and how many from pageable memory, with the median wall
time of upload + kernel per frame on each path (``daemon_paths``); then the same daemon again for
``--pageable-seconds`` with the frame buffers switched off (what every frame took before defect 6 was
fixed), and a micro-benchmark of the three ways on the same frames (``upload_per_frame_ms``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from edgedet.app import build_pipeline, start_pipeline, stop_pipeline  # noqa: E402
from edgedet.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from edgedet.config import load_config  # noqa: E402
from edgedet.cudart import open_runtime  # noqa: E402
from edgedet.models.postprocess import build_postprocessor  # noqa: E402
from edgedet.preprocess.cpu import CpuPreprocessor  # noqa: E402
from edgedet.preprocess.cuda import CudaPreprocessor  # noqa: E402
from edgedet.sources import capture as capture_module  # noqa: E402
from edgedet.types import Detection, DetectionResult  # noqa: E402
from tests.support.fake_tensorrt import DeviceMemory, HostMemory, HostRuntime, install  # noqa: E402
from tests.support.fake_tensorrt.models import dynamic_batch_yolox  # noqa: E402

CLIP = REPO / "edgedet" / "assets" / "demo_street.mp4"
MODEL = REPO / "edgedet" / "assets" / "yolox_nano.onnx"


def decode(path: Path) -> List[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def same(a: Tuple[Detection, ...], b: Tuple[Detection, ...]) -> bool:
    if len(a) != len(b):
        return False
    left = list(b)
    for d in a:
        match = next(
            (
                e for e in left
                if e.class_id == d.class_id and abs(e.score - d.score) <= 0.01
                and max(abs(e.x1 - d.x1), abs(e.y1 - d.y1), abs(e.x2 - d.x2), abs(e.y2 - d.y2)) <= 1.0
            ),
            None,
        )  # fmt: skip
        if match is None:
            return False
        left.remove(match)
    return True


def upload_times(runtime: Any, spec: Any, frames: List[np.ndarray]) -> Dict[str, float]:
    """Median wall ms per frame of upload + kernel: from a pinned frame buffer, from a decoded (pageable)
    frame copied into pinned staging, from the pageable frame itself."""
    out: Dict[str, float] = {}
    pre = CudaPreprocessor(spec, runtime=runtime)
    buf = pre.allocate()
    height, width = frames[0].shape[:2]
    pinned = pre.frame_buffer(width, height, mapped=False)  # what a source decoding into it would fill
    times = []
    for frame in frames * 3:
        pinned[...] = frame
        start = time.perf_counter()
        pre.run(pinned, buf)
        times.append((time.perf_counter() - start) * 1000.0)
    out["pinned_frame_buffer_ms"] = float(np.median(times[len(frames) :]))
    buf.free()
    pre.close()
    for label, staged in (("pinned_staging", True), ("pageable", False)):
        pre = CudaPreprocessor(spec, runtime=runtime, stage_frames=staged)
        buf = pre.allocate()
        times = []
        for frame in frames * 3:
            start = time.perf_counter()
            pre.run(frame, buf)
            times.append((time.perf_counter() - start) * 1000.0)
        out[label + "_ms"] = float(np.median(times[len(frames) :]))
        buf.free()
        pre.close()
    return out


def path_figures(pipeline: Any) -> Dict[str, Any]:
    """Per camera: frames per upload path and median ms (CudaPreprocessor.path_stats), and the frame
    pool's counts (decoded into a buffer / the ordinary way)."""
    out: Dict[str, Any] = {}
    for name, capture in pipeline.captures.items():
        stats = getattr(capture.preprocessor, "path_stats", None)
        frames = capture._mailbox.frames
        out[name] = {
            "paths": stats() if stats is not None else {},
            "decoded_into_buffers": None if frames is None else frames.decoded_into,
            "decoded_pageable": None if frames is None else frames.pageable,
        }
    return out


def run_daemon(config: Any, seconds: float, frame_buffers: bool) -> Dict[str, Any]:
    """The daemon's pipeline for ``seconds``: its results, batch sizes, worker failures and paths."""
    results: List[DetectionResult] = []
    lock = threading.Lock()

    def sink(result: DetectionResult) -> None:
        with lock:
            results.append(result)

    patch = pytest.MonkeyPatch()
    if not frame_buffers:  # the pageable path every frame took before defect 6 was fixed
        patch.setattr(capture_module, "frame_pool_for", lambda *a: None)
    pipeline = build_pipeline(config, publisher=None, extra_sinks=[sink])
    batches: List[int] = []
    backend = pipeline.model.backend
    real_submit = backend.submit  # type: ignore[attr-defined]

    def counting_submit(feeds: Any, wait: Any = 0.0) -> Any:
        value = next(iter(feeds.values()))
        batches.append(len(value) if isinstance(value, (list, tuple)) else 1)
        return real_submit(feeds, wait)

    backend.submit = counting_submit  # type: ignore[attr-defined]
    start_pipeline(pipeline)
    started = time.monotonic()
    time.sleep(seconds)
    stop_pipeline(pipeline, timeout=10.0)
    patch.undo()
    return {
        "pipeline": pipeline,
        "results": results,
        "batches": batches,
        "elapsed": time.monotonic() - started,
        "failed": {name: str(w.failure) for name, w in pipeline.workers().items() if w.failure is not None},
        "paths": path_figures(pipeline),
    }


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--pageable-seconds", type=float, default=0.0, help="then run again without frame buffers"
    )
    parser.add_argument(
        "--host", action="store_true", help="no GPU: host-memory CUDA layer and CPU preprocessing (CI)"
    )
    parser.add_argument(
        "--host-kernels",
        action="store_true",
        help="no GPU: host-memory CUDA layer and CUDA preprocessing through its numpy kernel (CI)",
    )
    args = parser.parse_args(argv)
    patch = pytest.MonkeyPatch()
    if args.host or args.host_kernels:
        runtime: Any = HostRuntime(integrated=False, kernels=args.host_kernels)
        fake = install(patch, "10.3.0", runtime=runtime, memory=HostMemory(runtime))
    else:
        runtime = open_runtime(0)
        fake = install(patch, "10.3.0", runtime=runtime, memory=DeviceMemory())
    work = Path(tempfile.mkdtemp(prefix="edgedet-agreement-"))
    model = dynamic_batch_yolox(MODEL, work / "yolox_nano_dyn.onnx")
    config_path = work / "edgedet.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "state_dir": str(work / "state"),
                "model": {"path": str(model)},
                "backend": {"type": "tensorrt", "precision": "fp16", "max_batch": 2, "slots": 2},
                "preprocess": {"type": "cpu" if args.host else "cuda"},
                "cameras": [
                    {
                        "name": name,
                        "source": {"type": "file", "path": str(CLIP), "loop": True, "pace": "fast"},
                    }
                    for name in ("cam-a", "cam-b")
                ],
            }
        )
    )
    config = load_config(config_path)
    run = run_daemon(config, args.seconds, frame_buffers=True)
    pipeline, results, batches = run["pipeline"], run["results"], run["batches"]
    elapsed, failed = run["elapsed"], run["failed"]
    without: Dict[str, Any] = {}
    if args.pageable_seconds > 0:
        again = run_daemon(config, args.pageable_seconds, frame_buffers=False)
        without = {"frames": len(again["results"]), "failed": again["failed"], "paths": again["paths"]}

    frames = decode(CLIP)
    reference = OnnxRuntimeBackend(model, threads=8)
    post = build_postprocessor(config.model, reference)
    cpu = CpuPreprocessor(pipeline.model.spec)
    cache: Dict[int, Tuple[Detection, ...]] = {}

    def agreeing(some: List[DetectionResult]) -> int:
        count = 0
        for r in some:
            index = (r.seq - 1) % len(frames)
            if index not in cache:
                buf = cpu.allocate()
                letterbox = cpu.run(frames[index], buf)
                outputs = reference.infer({pipeline.model.spec.name: np.asarray(buf)})
                cache[index] = post(outputs, [letterbox])[0]
            count += same(r.detections, cache[index])
        return count

    agree = agreeing(results)
    if without:
        without["agreeing_frames"] = agreeing(again["results"])
    reference.close()
    on_gpu = not (args.host or args.host_kernels)
    uploads = upload_times(runtime, pipeline.model.spec, frames[:30]) if on_gpu else {}
    summary = {
        "seconds": round(elapsed, 1),
        "frames": len(results),
        "frames_per_camera": {c: sum(1 for r in results if r.camera == c) for c in ("cam-a", "cam-b")},
        "fps": round(len(results) / elapsed, 1),
        "batches_of_2": sum(1 for b in batches if b == 2),
        "batches_of_1": sum(1 for b in batches if b == 1),
        "double_executions": fake.world.executions,
        "agreeing_frames": agree,
        "agreement": round(agree / len(results), 4) if results else 0.0,
        "daemon_paths": run["paths"],
        "daemon_without_frame_buffers": without,
        "upload_per_frame_ms": uploads,
        "worker_errors": failed,
        "gpu": f"{runtime.device_name} sm_{runtime.compute_capability[0]}{runtime.compute_capability[1]}",
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    patch.undo()
    ok = bool(results) and float(summary["agreement"]) >= 0.99 and not failed and summary["batches_of_2"] > 0
    if not args.host:  # CUDA preprocessing: nearly every frame from the buffers the sources decoded into
        for name, figures in run["paths"].items():
            paths = figures["paths"]
            fast = paths["pinned"]["frames"] + paths["mapped"]["frames"]
            if fast < 0.9 * (fast + paths["pageable"]["frames"] + paths["staged"]["frames"]):
                print(f"{name}: too few frames from pinned/mapped frame buffers: {paths}")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
