"""`edgedet bench`: figures for the README and the issues, printed, never asserted in tests.

pipeline: on one video and model, (a) the inference calls alone, (b) a naive sequential loop
(read -> preprocess -> infer -> decode in one thread), (c) the edgedet pipeline (capture thread with
preprocessing -> inference worker -> decode/publish worker), with frames/s for each, capture-to-publish
latency p50/p95 for (c), and peak RSS.

cameras (``--what cameras --cameras 1,2,4,8``): the pipeline with N cameras of the same clip; aggregate and
per-camera processed frames/s, how far the slowest/fastest camera is from the mean, capture-to-publish
p50/p95.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgedet.app import build_pipeline, load_model_stage, start_pipeline, stop_pipeline
from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.config import parse_config
from edgedet.errors import EdgedetError, SourceError
from edgedet.pipeline.latency import LatencyRecorder
from edgedet.pipeline.stats import PipelineStats
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.publish.messages import build_detections_message
from edgedet.sources.sampling import iter_video_samples

log = logging.getLogger(__name__)

REPO_SHARED_VIDEO = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video" / "vtest_1080p.mp4"
)
WARMUP = 10  # frames excluded from every rate (model warm-up, decoder start)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _default_video() -> Path:

    if REPO_SHARED_VIDEO.is_file():
        return REPO_SHARED_VIDEO
    return DEMO_CLIP


def _default_model() -> Path:

    return DEMO_MODEL


def _config_text(model: Path, video: Path, threads: int, instances: int = 1) -> str:
    return (
        f"model: {{path: {json.dumps(str(model))}}}\n"
        f"backend: {{type: onnxruntime, threads: {threads}, instances: {instances}}}\n"
        "cameras:\n"
        "  - name: bench\n"
        f"    source: {{type: file, path: {json.dumps(str(video))}, loop: false, pace: fast}}\n"
        "mqtt: {enabled: false}\n"
        "telemetry: {type: none}\n"
    )


def bench_pipeline(video: Path, model: Path, frames: int, threads: int, instances: int = 1) -> Dict[str, Any]:
    config = parse_config(_config_text(model, video, threads, instances))
    figures: Dict[str, Any] = {
        "video": str(video),
        "model": str(model),
        "frames": frames,
        "threads": threads,
        "instances": instances,
    }

    # (a) inference alone (one session, the configured threads), on a real preprocessed frame
    stage = load_model_stage(
        config.model_copy(update={"backend": config.backend.model_copy(update={"instances": 1})})
    )
    spec = stage.spec
    pre = CpuPreprocessor(spec)
    buf = pre.allocate()
    first = next(iter_video_samples(video, 1), None)
    if first is None:
        raise SourceError(f"{video}: no frame could be read")
    sample = first[1]
    pre.run(sample, buf)
    feeds = {spec.name: buf}
    for _ in range(WARMUP):
        stage.backend.infer(feeds)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        stage.backend.infer(feeds)
        times.append(time.perf_counter() - t0)
    infer_median_ms = float(np.median(times) * 1000)
    figures["a_inference_fps"] = len(times) / sum(times)
    figures["inference_median_ms"] = infer_median_ms

    # (b) naive sequential loop: read -> preprocess -> infer -> decode, one thread
    import cv2

    cap = cv2.VideoCapture(str(video))
    done = 0
    start = 0.0
    while done < frames + WARMUP:
        if done == WARMUP:
            start = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            break
        letterbox = pre.run(frame, buf)
        outputs = stage.backend.infer(feeds)
        stage.postprocessor(outputs, [letterbox])
        done += 1
    cap.release()
    figures["b_sequential_fps"] = (done - WARMUP) / (time.perf_counter() - start)
    stage.close()

    # (c) the edgedet pipeline, publishing built JSON messages (no broker: measures our side only)
    def build_message(result: Any) -> None:
        build_detections_message(result, pipeline.model.model_info, device_id="bench", seq=result.seq)

    pipeline = build_pipeline(config, extra_sinks=[build_message])
    pipeline.stats = PipelineStats(latency_window=frames + WARMUP)  # keep every sample of the run
    start_pipeline(pipeline)
    t_first: Optional[float] = None
    deadline = time.monotonic() + 600
    while pipeline.stats.published("bench") < frames + WARMUP and time.monotonic() < deadline:
        if t_first is None and pipeline.stats.published("bench") >= WARMUP:
            t_first = time.perf_counter()
        failures = [w.failure for w in pipeline.workers().values() if w.failure is not None]
        if failures:
            raise EdgedetError(f"pipeline failed: {failures[0]}")
        capture = next(iter(pipeline.captures.values()))
        if capture.status().state.value in ("ended", "failed") and pipeline.drained():
            break
        time.sleep(0.01)
    t_end = time.perf_counter()
    published = pipeline.stats.published("bench")
    lat = pipeline.stats.latency.percentiles("capture_to_publish") or {}
    stop_pipeline(pipeline, 5.0)
    figures["c_pipeline_fps"] = (published - WARMUP) / (t_end - (t_first or t_end))
    figures["c_latency_p50_ms"] = lat.get("p50_ms")
    figures["c_latency_p95_ms"] = lat.get("p95_ms")
    figures["c_stage_latency_ms"] = pipeline.stats.latency_summary()
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["c_over_b"] = figures["c_pipeline_fps"] / figures["b_sequential_fps"]
    figures["c_over_a"] = figures["c_pipeline_fps"] / figures["a_inference_fps"]
    figures["p95_over_median_infer"] = (figures["c_latency_p95_ms"] or 0) / infer_median_ms
    return figures


def _cameras_config_text(
    model: Path, video: Path, cameras: int, threads: int, instances: int, pace: str
) -> str:
    lines = [
        f"model: {{path: {json.dumps(str(model))}}}",
        f"backend: {{type: onnxruntime, threads: {threads}, instances: {instances}}}",
        "cameras:",
    ]
    for i in range(cameras):
        lines.append(f"  - name: cam{i + 1}")
        lines.append(f"    source: {{type: file, path: {json.dumps(str(video))}, loop: true, pace: {pace}}}")
    lines += ["mqtt: {enabled: false}", "telemetry: {type: none}", ""]
    return "\n".join(lines)


def bench_cameras(
    video: Path,
    model: Path,
    counts: Sequence[int],
    seconds: float,
    threads: int,
    instances: int,
    pace: str = "fast",
    warmup_s: float = 3.0,
) -> List[Dict[str, Any]]:
    """The daemon's pipeline with N cameras playing the same clip (looped): per run, aggregate and
    per-camera processed frames/s and capture-to-publish p50/p95 over ``seconds`` after a warm-up."""
    runs: List[Dict[str, Any]] = []
    for n in counts:
        config = parse_config(_cameras_config_text(model, video, n, threads, instances, pace))

        pipeline = build_pipeline(config)
        pipeline.extra_sinks.append(_message_builder(pipeline.model.model_info))
        start_pipeline(pipeline)
        try:
            _sleep_checking(pipeline, warmup_s)
            # a fresh recorder: the percentiles cover the measured window only
            pipeline.stats.latency = LatencyRecorder(window=1_000_000)
            names = list(pipeline.captures)
            before = {name: pipeline.stats.published(name) for name in names}
            t0 = time.perf_counter()
            _sleep_checking(pipeline, seconds)
            elapsed = time.perf_counter() - t0
            per_camera = {name: (pipeline.stats.published(name) - before[name]) / elapsed for name in names}
            lat = pipeline.stats.latency.percentiles("capture_to_publish") or {}
        finally:
            stop_pipeline(pipeline, 5.0)
        total = sum(per_camera.values())
        mean = total / len(per_camera)
        runs.append(
            {
                "cameras": n,
                "aggregate_fps": total,
                "per_camera_fps": per_camera,
                "worst_deviation_from_mean": max(abs(v - mean) for v in per_camera.values()) / mean
                if mean
                else None,
                "latency_p50_ms": lat.get("p50_ms"),
                "latency_p95_ms": lat.get("p95_ms"),
                "seconds": elapsed,
            }
        )
    single = next((r["aggregate_fps"] for r in runs if r["cameras"] == 1), None)
    for r in runs:
        r["aggregate_over_single"] = r["aggregate_fps"] / single if single else None
    return runs


def _message_builder(info: Any) -> Any:
    """A sink that builds each detections message as for MQTT (no broker: our side only)."""

    def build(result: Any) -> None:
        build_detections_message(result, info, device_id="bench", seq=result.seq)

    return build


def _sleep_checking(pipeline: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        failures = [w.failure for w in pipeline.workers().values() if w.failure is not None]
        if failures:
            raise EdgedetError(f"pipeline failed: {failures[0]}")
        time.sleep(0.05)


def _print_cameras(runs: List[Dict[str, Any]], video: Path, threads: int, instances: int, pace: str) -> None:
    print(f"video {video} (every camera plays it, looped, pace {pace})")
    print(f"ONNX Runtime: {instances} instance(s) x {threads} thread(s)")
    print(
        "cameras | aggregate fps | x single | per-camera fps (min..max) | worst dev. from mean "
        "| capture-to-publish p50 / p95"
    )
    for r in runs:
        fps = list(r["per_camera_fps"].values())
        ratio = r["aggregate_over_single"] or 0.0
        deviation = 100 * (r["worst_deviation_from_mean"] or 0.0)
        print(
            f"{r['cameras']:7d} | {r['aggregate_fps']:13.1f} | {ratio:8.2f} | "
            f"{min(fps):6.1f} .. {max(fps):6.1f}{'':13s} | {deviation:19.1f}% "
            f"| {r['latency_p50_ms']} / {r['latency_p95_ms']} ms"
        )


def _print_pipeline(fig: Dict[str, Any]) -> None:
    print(f"video {fig['video']}  model {Path(fig['model']).name}  {fig['frames']} frames")
    threads = fig["threads"] or "default"
    print(f"ONNX Runtime: {threads} thread(s) per session, {fig['instances']} instance(s) in (c)")
    print(
        f"(a) inference calls alone     {fig['a_inference_fps']:7.1f} frames/s"
        f"  (median {fig['inference_median_ms']:.1f} ms)"
    )
    print(f"(b) naive sequential loop     {fig['b_sequential_fps']:7.1f} frames/s")
    print(f"(c) edgedet pipeline          {fig['c_pipeline_fps']:7.1f} frames/s")
    print(f"    (c)/(b) = {fig['c_over_b']:.2f}   (c)/(a) = {fig['c_over_a']:.2f}")
    print(
        f"    capture-to-publish latency p50 {fig['c_latency_p50_ms']} ms, p95 {fig['c_latency_p95_ms']} ms"
        f" ({fig['p95_over_median_infer']:.2f}x median inference)"
    )
    for stage, pct in fig["c_stage_latency_ms"].items():
        print(f"      {stage:20s} p50 {pct['p50_ms']:7.2f} ms  p95 {pct['p95_ms']:7.2f} ms")
    print(f"peak RSS {fig['peak_rss_mb']:.0f} MB")


def _has_cuda() -> bool:
    import importlib.util

    return importlib.util.find_spec("pycuda") is not None


def run_bench(args: argparse.Namespace) -> int:
    what = args.what
    results: Dict[str, Any] = {}
    if what in ("pipeline", "all"):
        video = args.video or _default_video()
        model = args.model or _default_model()
        results["pipeline"] = fig = bench_pipeline(video, model, args.frames, args.threads, args.instances)
        if not args.json:
            _print_pipeline(fig)
    if what == "cameras":
        video = args.video or _default_video()
        model = args.model or _default_model()
        counts = [int(n) for n in str(args.cameras).split(",") if n.strip()]
        pace = args.pace
        runs = bench_cameras(video, model, counts, args.seconds, args.threads, args.instances, pace)
        results["cameras"] = runs
        if not args.json:
            _print_cameras(runs, video, args.threads, args.instances, pace)
    if what in ("outbox", "all"):
        from edgedet.devtools.outbox_bench import main as outbox_main

        outbox_main([])
    if what in ("telemetry", "all"):
        from edgedet.telemetry.bench import main as telemetry_main

        telemetry_main([])
    if what in ("http", "all"):
        from edgedet.service.http_bench import main as http_main

        http_main([])
    if what == "preprocess" or (what == "all" and _has_cuda()):
        from edgedet.preprocess.bench import main as preprocess_main

        preprocess_main([])
    elif what == "all":
        print("preprocess: skipped (no pycuda/CUDA here; it compares the CUDA kernel with the CPU path)")
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=str)
        print()
    return 0
