"""Sensitivity-guided mixed precision: keep the few Conv layers that INT8 hurts most in float.

1. Calibrate once (``ranges.RangeTable``) and build the fully quantized Q/DQ graph once.
2. Per-layer sensitivity, one layer at a time: a trial model with ONLY that Conv quantized runs on a
   few calibration images and its raw outputs are compared with FP32's. One-at-a-time, not
   "all but one": on YOLOX-Nano a single depthwise conv (whose per-tensor input range is set by a few
   loud channels) collapses mAP on its own, so with everything else quantized removing any one layer
   changes nothing measurable and all layers look alike. Needs no labels.
3. Greedy search on the labelled evaluation set: layers ordered by harm per MAC (so cheap, harmful
   depthwise convs go first) are kept in float, growing the float set geometrically until the mAP
   drop is within ``max_map_drop``, bisecting back to the smallest passing prefix, then trying to
   re-quantize each float layer (largest MACs first) while the budget holds. Every evaluation is one
   step of the report's plot.

Trial models are made by bypassing Q/DQ pairs in the fully quantized graph (``quantize.strip_layers``),
never by quantizing again.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgedet.errors import require
from edgedet.precision import quantize as q
from edgedet.precision.calibration import CalibrationSet, load_calibration
from edgedet.precision.errors import PrecisionError
from edgedet.precision.evaluate import evaluate
from edgedet.precision.report import write_search_report
from edgedet.precision.result import LayerSensitivity, SearchResult, Step

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


Evaluator = Callable[[Path], Tuple[float, float]]  # model path -> (mAP@.5:.95, mAP@.5)


def output_error(reference: Sequence[np.ndarray], output: Sequence[np.ndarray]) -> float:
    """Mean over outputs and their per-box columns of MSE / variance of the FP32 column.

    Columns (box coordinates, objectness, class scores ...) are normalised separately so that no
    quantity dominates by its units; the column axis is the shorter of the last two axes.
    """
    errs: List[float] = []
    for ref, out in zip(reference, output):
        r = np.asarray(ref, dtype=np.float64)
        o = np.asarray(out, dtype=np.float64)
        if r.ndim >= 2:
            axis = r.ndim - 1 if r.shape[-1] <= r.shape[-2] else r.ndim - 2
            r = np.moveaxis(r, axis, -1).reshape(-1, r.shape[axis])
            o = np.moveaxis(o, axis, -1).reshape(-1, o.shape[axis])
        else:
            r, o = r.reshape(-1, 1), o.reshape(-1, 1)
        var = r.var(axis=0) + 1e-12
        errs.append(float(np.mean(((o - r) ** 2).mean(axis=0) / var)))
    return float(np.mean(errs)) if errs else 0.0


def _session(model: Any) -> Any:
    ort: Any = require("onnxruntime", "quantize", "the sensitivity search")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run_all(session: Any, feeds: Sequence[Dict[str, np.ndarray]]) -> List[List[np.ndarray]]:
    return [list(session.run(None, f)) for f in feeds]


def measure_sensitivity(
    prepared: Any,
    qdq: Any,
    layers: Sequence[q.ConvLayer],
    feeds: Sequence[Dict[str, np.ndarray]],
    deadline: Optional[float] = None,
) -> List[LayerSensitivity]:
    """Output error of each layer quantized on its own (all others float), on ``feeds``."""
    reference = _run_all(_session(prepared), feeds)
    all_names = {c.name for c in layers}
    out: List[LayerSensitivity] = []
    started = time.monotonic()
    for i, layer in enumerate(layers):
        if deadline is not None and time.monotonic() > deadline:
            raise PrecisionError(
                f"time limit reached while measuring sensitivity ({i} of {len(layers)} layers); "
                "use fewer --sensitivity-images or a longer --time-limit"
            )
        trial = q.strip_layers(qdq, all_names - {layer.name})
        outputs = _run_all(_session(trial), feeds)
        err = float(np.mean([output_error(r, o) for r, o in zip(reference, outputs)]))
        out.append(LayerSensitivity(layer.name, layer.trt_name, layer.macs, layer.depthwise, err))
        log.debug("sensitivity %s: %.5f", layer.name, err)
    log.info("measured the sensitivity of %d layers in %.1f s", len(layers), time.monotonic() - started)
    return out


def priority_order(sens: Sequence[LayerSensitivity]) -> List[LayerSensitivity]:
    """Harm per MAC, harm measured above the typical (median) layer's error; layers no worse than the
    median come last, most harmful first."""
    floor = float(np.median([s.error for s in sens])) if sens else 0.0
    harmful = [s for s in sens if s.error > floor]
    rest = [s for s in sens if s.error <= floor]
    harmful.sort(key=lambda s: (s.error - floor) / max(s.macs, 1), reverse=True)
    rest.sort(key=lambda s: s.error, reverse=True)
    return harmful + rest


def _growth(n: int) -> List[int]:
    """Prefix sizes 1, 2, 3, 4, 6, 8, 11, 16 ... (about x1.41 per step) up to n."""
    sizes: List[int] = []
    k = 1.0
    while int(k) < n:
        if not sizes or int(k) > sizes[-1]:
            sizes.append(int(k))
        k = max(k * math.sqrt(2.0), k + 1)
    sizes.append(n)
    return sizes


class _Search:
    """The greedy phase: owns the step list, limits and the best configuration so far."""

    def __init__(
        self,
        qdq: Any,
        layers: Sequence[q.ConvLayer],
        evaluator: Evaluator,
        target: float,
        max_steps: int,
        deadline: float,
        workdir: Path,
    ) -> None:
        self.qdq = qdq
        self.layers = layers
        self.evaluator = evaluator
        self.target = target
        self.max_steps = max_steps
        self.deadline = deadline
        self.workdir = workdir
        self.steps: List[Step] = []
        self.cache: Dict[frozenset, Step] = {}
        self.stopped: Optional[str] = None

    def out_of_budget(self) -> bool:
        if len([s for s in self.steps if s.phase != "fp32"]) >= self.max_steps:
            self.stopped = f"step limit ({self.max_steps}) reached"
        elif time.monotonic() > self.deadline:
            self.stopped = "time limit reached"
        return self.stopped is not None

    def evaluate(self, float_names: Set[str], phase: str) -> Optional[Step]:
        key = frozenset(float_names)
        if key in self.cache:
            return self.cache[key]
        if self.out_of_budget():
            return None
        started = time.monotonic()
        model = q.strip_layers(self.qdq, set(float_names)) if float_names else self.qdq
        path = self.workdir / "trial.onnx"
        q.save_model(model, path)
        m, m50 = self.evaluator(path)
        share = q.int8_share(self.layers, set(float_names))
        step = Step(
            index=len(self.steps),
            phase=phase,
            float_layers=sorted(float_names),
            int8_mac_share=share,
            map50_95=m,
            map50=m50,
            passed=m >= self.target - 1e-12,
            seconds=time.monotonic() - started,
        )
        self.steps.append(step)
        self.cache[key] = step
        log.info(
            "step %d (%s): %d float layers, %.1f%% MACs INT8, mAP %.4f %s",
            step.index,
            phase,
            len(float_names),
            100 * share,
            m,
            "ok" if step.passed else "below target",
        )
        return step

    def best(self) -> Step:
        trials = [s for s in self.steps if s.phase != "fp32"]
        passing = [s for s in trials if s.passed]
        if passing:
            return max(passing, key=lambda s: (round(s.int8_mac_share, 6), s.map50_95))
        return max(trials, key=lambda s: (s.map50_95, s.int8_mac_share))

    def run(self, order: Sequence[str]) -> None:
        first = self.evaluate(set(), "int8")
        if first is None or first.passed:
            return
        lo, hi = 0, None  # largest failing prefix, smallest passing prefix
        for k in _growth(len(order)):
            step = self.evaluate(set(order[:k]), "grow")
            if step is None:
                return
            if step.passed:
                hi = k
                break
            lo = k
        if hi is None:
            return
        while hi - lo > 1:
            mid = (lo + hi) // 2
            step = self.evaluate(set(order[:mid]), "bisect")
            if step is None:
                return
            if step.passed:
                hi = mid
            else:
                lo = mid
        kept = list(order[:hi])
        by_name = {c.name: c for c in self.layers}
        for name in sorted(kept, key=lambda n: by_name[n].macs, reverse=True):
            trial = set(kept) - {name}
            step = self.evaluate(trial, "requantize")
            if step is None:
                return
            if step.passed:
                kept = sorted(trial)


def search(
    fp32_onnx: PathLike,
    calibration: Any,
    eval_images: PathLike,
    eval_annotations: PathLike,
    out_path: PathLike,
    *,
    max_map_drop: float = 0.01,
    method: str = "percentile",
    percentile: float = 99.99,
    calib_images: int = 128,
    sensitivity_images: int = 16,
    eval_limit: Optional[int] = None,
    max_steps: int = 40,
    time_limit_s: float = 1800.0,
    candidates: Optional[Sequence[str]] = None,
    ranges_path: Optional[PathLike] = None,
    report: bool = True,
    model_cfg: Any = None,
    evaluator: Optional[Evaluator] = None,
) -> SearchResult:
    """Find the mixed-precision Q/DQ model of ``fp32_onnx`` and write it to ``out_path``, next to
    ``<stem>.float_layers.json``, ``<stem>.ranges.json``, ``<stem>.report.md`` and ``<stem>.report.png``.

    ``max_map_drop``: allowed absolute mAP@0.5:0.95 loss against FP32 on the evaluation set.
    ``candidates``: only these Conv layers may be kept in float (default: all). ``eval_limit``: use
    only the first N evaluation images. ``evaluator`` replaces the COCO evaluation (path -> mAPs).
    A budget that cannot be met within ``max_steps`` evaluations or ``time_limit_s`` ends with
    ``within_budget=False``, a message saying so, and the best model found written anyway.
    """
    started = time.monotonic()
    deadline = started + time_limit_s
    if max_map_drop < 0:
        raise PrecisionError("max_map_drop must be >= 0")
    if max_steps < 1:
        raise PrecisionError("max_steps must be at least 1")
    src = Path(fp32_onnx)
    out = Path(out_path)
    stem = out.with_suffix("")
    ranges_file = Path(ranges_path) if ranges_path else Path(f"{stem}.ranges.json")
    model = q.load_model(src)
    if q.count_quant_nodes(model):
        raise PrecisionError(
            f"{src} is already quantized (QAT or PTQ Q/DQ model): there is nothing to search; "
            "evaluate it with `edgedet eval` and build it as an explicit INT8 engine"
        )
    sha = q.file_sha256(src)
    prepared = q.prepare(model)
    layers = q.conv_layers(prepared, model)

    calib = calibration
    if not isinstance(calib, CalibrationSet):
        # also when the ranges are reused: the sensitivity analysis runs on calibration images
        calib = load_calibration(calibration, src, limit=calib_images, model_cfg=model_cfg)
    table = q.obtain_ranges(prepared, calib, src, sha, calib_images, ranges_file, model_cfg)
    ranges = table.ranges(method, percentile)
    qdq = q.build_qdq(prepared, ranges)
    if evaluator is None:
        evaluator = _CocoEvaluator(eval_images, eval_annotations, eval_limit, model_cfg)

    fp32_map, fp32_map50 = evaluator(src)
    target = fp32_map - max_map_drop
    log.info("FP32 mAP@0.5:0.95 %.4f; target >= %.4f", fp32_map, target)

    feeds = list(calib.feeds())[: max(1, sensitivity_images)]
    pool = (
        layers
        if candidates is None
        else [c for c in layers if c.name in q._resolve_layers(layers, candidates)]
    )
    sens = measure_sensitivity(prepared, qdq, pool, feeds, deadline)
    order = [s.name for s in priority_order(sens)]

    with tempfile.TemporaryDirectory(prefix="edgedet-search-") as tmp:
        runner = _Search(qdq, layers, evaluator, target, max_steps, deadline, Path(tmp))
        runner.steps.append(Step(0, "fp32", [c.name for c in layers], 0.0, fp32_map, fp32_map50, True, 0.0))
        runner.run(order)
        if len(runner.steps) < 2:
            raise PrecisionError(f"no INT8 model was evaluated: {runner.stopped or 'no budget'}")
        best = runner.best()
    float_names = set(best.float_layers)
    final = q.strip_layers(qdq, float_names) if float_names else qdq
    trt_names = [c.trt_name for c in layers if c.name in float_names]
    within = best.passed
    drop = fp32_map - best.map50_95
    if within:
        message = (
            f"mixed precision found: mAP {best.map50_95:.4f} (FP32 {fp32_map:.4f}, drop {drop:.4f} <= "
            f"{max_map_drop}) with {best.int8_mac_share:.1%} of conv MACs in INT8, "
            f"{len(trt_names)} of {len(layers)} Conv layers kept in float"
        )
    else:
        message = (
            f"budget NOT met ({runner.stopped or 'every candidate tried'}): the best model found has mAP "
            f"{best.map50_95:.4f} (FP32 {fp32_map:.4f}, drop {drop:.4f} > {max_map_drop}) with "
            f"{best.int8_mac_share:.1%} of conv MACs in INT8; it was written anyway. Allow a larger "
            "--max-map-drop, more --max-steps or a longer --time-limit"
        )
    q.tag_model(
        final,
        {
            "method": method,
            "source_sha256": sha,
            "float_layers": trt_names,
            "int8_mac_share": round(best.int8_mac_share, 4),
            "map50_95": round(best.map50_95, 4),
            "fp32_map50_95": round(fp32_map, 4),
            "within_budget": within,
        },
    )
    q.save_model(final, out)
    layers_path = q.write_float_layers(
        Path(f"{stem}.float_layers.json"),
        trt_names,
        sha,
        qdq_model=out.name,
        qdq_model_sha256=q.file_sha256(out),
        method=method,
        max_map_drop=max_map_drop,
        map50_95=round(best.map50_95, 4),
        fp32_map50_95=round(fp32_map, 4),
        int8_mac_share=round(best.int8_mac_share, 4),
    )
    result = SearchResult(
        qdq_path=out,
        float_layers_path=layers_path,
        report_path=None,
        plot_path=None,
        ranges_path=ranges_file,
        fp32_map50_95=fp32_map,
        fp32_map50=fp32_map50,
        map50_95=best.map50_95,
        map50=best.map50,
        int8_mac_share=best.int8_mac_share,
        float_layers=trt_names,
        within_budget=within,
        max_map_drop=max_map_drop,
        message=message,
        method=method,
        steps=runner.steps,
        sensitivities=sens,
        eval_images=int(getattr(evaluator, "images", 0) or eval_limit or 0),
        calib_images=len(calib),
        model=str(src),
    )
    result.seconds = time.monotonic() - started
    Path(f"{stem}.search.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    if report:
        result.report_path, result.plot_path = write_search_report(result, Path(f"{stem}.report.md"))
    (log.info if within else log.warning)("%s", message)
    return result


class _CocoEvaluator:
    """COCO mAP through edgedet.precision.evaluate; remembers how many images were scored."""

    def __init__(self, images: PathLike, annotations: PathLike, limit: Optional[int], model_cfg: Any) -> None:
        self.images_dir, self.annotations, self.limit, self.model_cfg = images, annotations, limit, model_cfg
        self.images = 0

    def __call__(self, path: Path) -> Tuple[float, float]:
        r = evaluate(path, self.images_dir, self.annotations, model_cfg=self.model_cfg, limit=self.limit)
        self.images = r.images
        return r.map50_95, r.map50
