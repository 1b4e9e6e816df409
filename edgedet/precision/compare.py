"""Side-by-side comparison of model variants (FP32, FP16, INT8 naive, INT8 mixed, TensorRT engines).

For each variant: COCO mAP@0.5:0.95 and mAP@0.5 (through ``edgedet.precision.evaluate``), the classes
that lost most AP against the reference, median inference latency, file size, and -- for users without
labels -- an agreement score against the reference's detections on a video: the mean over sampled frames
of the F1 of class-aware, IoU >= 0.5 greedy matching between the variant's and the reference's boxes
(1.0 = the same detections; a frame where neither finds anything counts as 1.0).
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgedet.backends import open_backend
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.config import load_config
from edgedet.errors import EdgedetError
from edgedet.models.config import ModelConfig
from edgedet.models.detector import ImageDetector
from edgedet.models.postprocess import resolve_input_spec
from edgedet.precision.calibration import sample_video_frames
from edgedet.precision.errors import PrecisionError
from edgedet.precision.evaluate import evaluate
from edgedet.precision.report import markdown_table
from edgedet.types import Detection

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass
class Variant:
    """A model to compare. ``backend`` is an already open Backend (e.g. TensorRT), else ONNX Runtime."""

    name: str
    path: PathLike
    backend: Any = None


@dataclass
class VariantResult:
    name: str
    path: str
    precision: str = ""
    size_bytes: int = 0
    map50_95: Optional[float] = None
    map50: Optional[float] = None
    per_class_ap: Dict[str, Optional[float]] = field(default_factory=dict)
    median_infer_ms: Optional[float] = None
    agreement: Optional[float] = None  # mean F1 against the reference on video frames
    error: Optional[str] = None


@dataclass
class Comparison:
    variants: List[VariantResult]
    reference: str
    images: int = 0
    video: Optional[str] = None
    video_frames: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def losers(self, variant: VariantResult, n: int = 3) -> List[Tuple[str, float]]:
        """The ``n`` classes whose AP fell most against the reference (class, change)."""
        ref = next((v for v in self.variants if v.name == self.reference), None)
        if ref is None or variant is ref:
            return []
        deltas = []
        for cls, ap in variant.per_class_ap.items():
            base = ref.per_class_ap.get(cls)
            if ap is not None and base is not None:
                deltas.append((cls, ap - base))
        deltas.sort(key=lambda d: d[1])
        return [d for d in deltas[:n] if d[1] < 0]

    def markdown(self, losers: int = 3) -> str:
        ref = next((v for v in self.variants if v.name == self.reference), None)
        header = ["variant", "mAP@0.5:0.95", "mAP@0.5", "median ms", "size MB"]
        if self.video:
            header.append(f"agreement ({self.video_frames} frames)")
        header.append("biggest per-class AP losses")
        rows = []
        for v in self.variants:
            if v.error:
                rows.append([v.name] + ["-"] * (len(header) - 2) + [f"error: {v.error}"])
                continue
            delta = ""
            if ref is not None and v is not ref and v.map50_95 is not None and ref.map50_95 is not None:
                delta = f" ({v.map50_95 - ref.map50_95:+.3f})"
            row = [
                v.name,
                "-" if v.map50_95 is None else f"{v.map50_95:.3f}{delta}",
                "-" if v.map50 is None else f"{v.map50:.3f}",
                "-" if v.median_infer_ms is None else f"{v.median_infer_ms:.1f}",
                f"{v.size_bytes / 1e6:.2f}",
            ]
            if self.video:
                row.append("-" if v.agreement is None else f"{v.agreement:.3f}")
            row.append(", ".join(f"{c} {d:+.3f}" for c, d in self.losers(v, losers)) or "")
            rows.append(row)
        return markdown_table(header, rows, "l" + "r" * (len(header) - 2) + "l")


def match_f1(reference: Sequence[Detection], detections: Sequence[Detection], iou: float = 0.5) -> float:
    """F1 of greedy (highest score first) class-aware IoU matching of ``detections`` to ``reference``."""
    if not reference and not detections:
        return 1.0
    if not reference or not detections:
        return 0.0
    used = [False] * len(reference)
    ref_boxes = np.array([[d.x1, d.y1, d.x2, d.y2] for d in reference], dtype=np.float64)
    ref_area = (ref_boxes[:, 2] - ref_boxes[:, 0]).clip(0) * (ref_boxes[:, 3] - ref_boxes[:, 1]).clip(0)
    matched = 0
    for d in sorted(detections, key=lambda d: -d.score):
        ix1 = np.maximum(ref_boxes[:, 0], d.x1)
        iy1 = np.maximum(ref_boxes[:, 1], d.y1)
        ix2 = np.minimum(ref_boxes[:, 2], d.x2)
        iy2 = np.minimum(ref_boxes[:, 3], d.y2)
        inter = (ix2 - ix1).clip(0) * (iy2 - iy1).clip(0)
        area = max(d.x2 - d.x1, 0.0) * max(d.y2 - d.y1, 0.0)
        ious = inter / np.maximum(ref_area + area - inter, 1e-9)
        best, best_iou = -1, iou
        for j in np.argsort(-ious):
            if ious[j] < iou:
                break
            if not used[j] and reference[j].class_id == d.class_id:
                best, best_iou = int(j), float(ious[j])
                break
        if best >= 0 and best_iou >= iou:
            used[best] = True
            matched += 1
    return 2.0 * matched / (len(reference) + len(detections))


def video_detections(
    variant: Variant, frames: Sequence[np.ndarray], score_threshold: float, model_cfg: Any = None
) -> Tuple[List[Tuple[Detection, ...]], float]:
    """Detections on every frame and the median inference time (ms)."""

    cfg = model_cfg or ModelConfig(path=str(variant.path))
    backend = variant.backend or OnnxRuntimeBackend(variant.path)
    detector = ImageDetector.for_model(backend, cfg, score_threshold=score_threshold)
    out: List[Tuple[Detection, ...]] = []
    times: List[float] = []
    try:
        for frame in frames:
            out.append(detector.detect(frame))
            times.append(detector.timings_ms["infer"])
    finally:
        detector.close()
        if variant.backend is None:
            backend.close()
    return out, statistics.median(times)


def compare(
    variants: Sequence[Variant],
    images: Optional[PathLike] = None,
    annotations: Optional[PathLike] = None,
    *,
    video: Optional[PathLike] = None,
    video_frames: int = 30,
    score_threshold: float = 0.3,
    reference: Optional[str] = None,
    limit: Optional[int] = None,
    threads: int = 0,
    model_cfg: Any = None,
) -> Comparison:
    """Evaluate every variant; the first (or ``reference``) is what the others are compared with.

    ``images`` + ``annotations``: labelled COCO data for mAP; ``video``: unlabelled clip for the
    agreement score (``video_frames`` frames sampled evenly; detections above ``score_threshold``).
    A variant that fails to load or run gets an ``error`` instead of stopping the comparison.
    """
    if not variants:
        raise PrecisionError("nothing to compare")
    if (images is None) != (annotations is None):
        raise PrecisionError("mAP needs both an image folder and an annotation file")
    if images is None and video is None:
        raise PrecisionError("give labelled images (+ annotations) and/or an unlabelled video")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise PrecisionError(f"variant names must be unique: {names}")
    ref_name = reference or variants[0].name
    if ref_name not in names:
        raise PrecisionError(f"reference {ref_name!r} is not among the variants")

    results: List[VariantResult] = []
    n_images = 0
    for v in variants:
        r = VariantResult(name=v.name, path=str(v.path))
        try:
            r.size_bytes = Path(v.path).stat().st_size
        except OSError as exc:
            r.error = f"cannot read {v.path}: {exc.strerror}"
            results.append(r)
            continue
        if images is not None and annotations is not None:
            try:
                ev = evaluate(
                    v.path,
                    images,
                    annotations,
                    model_cfg=model_cfg,
                    backend=v.backend,
                    threads=threads,
                    limit=limit,
                )
            except EdgedetError as exc:
                r.error = str(exc)
                results.append(r)
                continue
            r.precision, r.map50_95, r.map50 = ev.precision, ev.map50_95, ev.map50
            r.per_class_ap, r.median_infer_ms = dict(ev.per_class_ap), ev.median_infer_ms
            n_images = ev.images
            log.info("%s: mAP %.4f, %.1f ms", v.name, ev.map50_95, ev.median_infer_ms)
        results.append(r)
    frames_used = 0
    if video is not None:
        frames_used = _add_agreement(
            variants, results, ref_name, Path(video), video_frames, score_threshold, model_cfg
        )
    return Comparison(results, ref_name, n_images, str(video) if video else None, frames_used)


def _add_agreement(
    variants: Sequence[Variant],
    results: List[VariantResult],
    ref_name: str,
    video: Path,
    n_frames: int,
    score_threshold: float,
    model_cfg: Any,
) -> int:
    frames = [f for _, f in sample_video_frames(video, n_frames)]
    by_name = {v.name: v for v in variants}
    ref_result = next(r for r in results if r.name == ref_name)
    if ref_result.error:
        return 0
    ref_dets, ref_ms = video_detections(by_name[ref_name], frames, score_threshold, model_cfg)
    for r in results:
        if r.error:
            continue
        if r.name == ref_name:
            r.agreement = 1.0
            dets, ms = ref_dets, ref_ms
        else:
            try:
                dets, ms = video_detections(by_name[r.name], frames, score_threshold, model_cfg)
            except EdgedetError as exc:
                r.error = str(exc)
                continue
            r.agreement = float(np.mean([match_f1(a, b) for a, b in zip(ref_dets, dets)]))
        if r.median_infer_ms is None:
            r.median_infer_ms = ms
    return len(frames)


def run_compare_command(args: Any, models: Sequence[Path]) -> int:
    """`edgedet eval --model A --model B ... [--agreement-video V] [--report R] [--json]`.

    The first model is the reference. With ``--config`` its model settings apply to every variant and,
    for a TensorRT backend, each model is opened through that backend (engines built/cached as usual).
    """
    model_cfg: Any = None
    backend_cfg: Any = None
    state_dir = Path(".")
    config_path = getattr(args, "config", None)
    if config_path is not None:
        config = load_config(config_path)
        model_cfg = config.model
        if config.backend.type != "onnxruntime":
            backend_cfg, state_dir = config.backend, config.state_path
    variants: List[Variant] = []
    seen: Dict[str, int] = {}
    opened: List[Any] = []
    try:
        for path in models:
            name = Path(path).name
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name} ({seen[name]})"
            backend = None
            if backend_cfg is not None:
                backend = open_backend(
                    backend_cfg,
                    Path(path),
                    state_dir,
                    input_spec=resolve_input_spec(model_cfg, Path(path)),
                    input_size=model_cfg.input_size,
                )
                opened.append(backend)
            variants.append(Variant(name, path, backend))
        result = compare(
            variants,
            args.images,
            args.annotations,
            video=getattr(args, "agreement_video", None),
            limit=getattr(args, "limit", None),
            threads=getattr(args, "threads", 0),
            model_cfg=model_cfg,
        )
    finally:
        for b in opened:
            b.close()
    table = result.markdown()
    report = getattr(args, "report", None)
    if report is not None:
        Path(report).write_text(f"# Model variants on {result.images} images\n\n{table}\n", encoding="utf-8")
    if getattr(args, "json", False):
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(table)
    return 1 if any(v.error for v in result.variants) else 0
