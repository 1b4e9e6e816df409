"""COCO mAP of a detection model on an image folder + a COCO instances annotation file.

Used by ``edgedet eval`` and by the quantization tools, which evaluate variant ONNX files with their own
ONNX Runtime session options. Thresholds default to the usual COCO protocol: score >= 0.001, class-aware
NMS at IoU 0.65, at most 100 boxes per image.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgedet.backends.base import Backend
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.errors import require
from edgedet.models.config import ModelConfig
from edgedet.models.detector import ImageDetector
from edgedet.precision.coco import (
    EvalError,
    category_map,
    coco_detections,
    load_annotations,
    run_cocoeval,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass
class EvalResult:
    model: str
    precision: str  # the backend's precision ("fp32", "int8" ...)
    family: str
    images: int
    detections: int
    map50_95: float  # COCO AP@[0.5:0.95], all areas, 100 detections
    map50: float
    per_class_ap: Dict[str, Optional[float]]  # AP@[0.5:0.95] by category name; None: no ground truth
    median_infer_ms: float  # backend.infer only
    median_total_ms: float  # preprocess + infer + postprocess
    stats: List[float] = field(default_factory=list)  # the 12 COCOeval numbers
    summary: str = ""  # pycocotools' summary lines

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def evaluate(
    model_path: str | Path,
    images_dir: str | Path,
    annotations: str | Path,
    *,
    model_cfg: Optional[ModelConfig] = None,
    backend: Optional[Backend] = None,
    threads: int = 0,
    providers: Optional[Sequence[str]] = None,
    session_options: Optional[Any] = None,
    score_threshold: float = 0.001,
    nms_iou: float = 0.65,
    max_detections: int = 100,
    limit: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> EvalResult:
    """Run the model on every annotated image found in ``images_dir`` and score it with pycocotools.

    ``model_cfg`` supplies family, preprocessing overrides and labels (its thresholds, per-class
    thresholds and allow-list are replaced by the evaluation settings). ``backend`` is an already open
    backend (any kind, kept open); otherwise ONNX Runtime opens ``model_path`` with ``threads``,
    ``providers`` and ``session_options``. ``limit`` evaluates only the first N images (by id).
    """
    cv2: Any = require("cv2", "cv", "evaluation")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise EvalError(f"image folder not found: {images_dir}")
    coco = load_annotations(Path(annotations))
    image_ids = sorted(coco.getImgIds())
    if limit is not None:
        image_ids = image_ids[:limit]
    if not image_ids:
        raise EvalError(f"{annotations} lists no images")
    paths = {i: images_dir / coco.imgs[i]["file_name"] for i in image_ids}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise EvalError(
            f"{len(missing)} of {len(paths)} annotated images are not in {images_dir} "
            f"(e.g. {missing[0].name})"
        )

    cfg = (model_cfg or ModelConfig(path=str(model_path))).model_copy(
        update={"class_thresholds": {}, "classes": None}
    )
    own = backend is None
    if backend is None:
        backend = OnnxRuntimeBackend(
            model_path, threads=threads, providers=providers, session_options=session_options
        )
    try:
        detector = ImageDetector.for_model(
            backend,
            cfg,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            max_detections=max_detections,
        )
        categories = category_map(detector.post.class_names, coco.loadCats(coco.getCatIds()))
        results: List[Dict[str, Any]] = []
        infer_ms: List[float] = []
        total_ms: List[float] = []
        started = time.monotonic()
        for n, image_id in enumerate(image_ids, 1):
            image = cv2.imread(str(paths[image_id]), cv2.IMREAD_COLOR)
            if image is None:
                raise EvalError(f"cannot decode image {paths[image_id]}")
            detections = detector.detect(image)
            results.extend(coco_detections(detections, image_id, categories))
            infer_ms.append(detector.timings_ms["infer"])
            total_ms.append(sum(detector.timings_ms.values()))
            if progress is not None:
                progress(n, len(image_ids))
        log.info("ran %d images in %.1f s", len(image_ids), time.monotonic() - started)
        family = detector.post.family
        precision = backend.precision
        detector.close()
    finally:
        if own:
            backend.close()

    stats, per_cat, summary = run_cocoeval(coco, results, image_ids)
    names = {int(c["id"]): str(c["name"]) for c in coco.loadCats(coco.getCatIds())}
    return EvalResult(
        model=str(model_path),
        precision=precision,
        family=family,
        images=len(image_ids),
        detections=len(results),
        map50_95=stats[0],
        map50=stats[1],
        per_class_ap={names[c]: ap for c, ap in per_cat.items()},
        median_infer_ms=statistics.median(infer_ms),
        median_total_ms=statistics.median(total_ms),
        stats=stats,
        summary=summary,
    )
