"""COCO-format plumbing for evaluation: annotations, category ids, detection lists and pycocotools runs.

pycocotools is imported lazily (extra ``eval``) and its chatter on stdout is captured.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgedet.errors import EdgedetError, require
from edgedet.types import Detection

log = logging.getLogger(__name__)


class EvalError(EdgedetError):
    """The evaluation data (images or annotation file) is missing or unusable."""


def _pycocotools() -> Tuple[Any, Any]:
    require("pycocotools", "eval", "COCO evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def load_annotations(path: Path) -> Any:
    """A pycocotools COCO object for an instances JSON file; bad files are an EvalError."""
    coco_cls, _ = _pycocotools()
    if not path.is_file():
        raise EvalError(f"annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = coco_cls(str(path))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise EvalError(f"{path} is not a COCO instances annotation file: {exc}") from exc
    if "categories" not in coco.dataset or "images" not in coco.dataset:
        raise EvalError(f"{path} is not a COCO instances annotation file (no images/categories)")
    return coco


def category_map(class_names: Sequence[str], categories: Sequence[Mapping[str, Any]]) -> Dict[int, int]:
    """Model class index -> COCO category id.

    By name when the names match (case-insensitive); otherwise, when the model has exactly as many
    classes as the file has categories, by position in category-id order (the usual 80 contiguous
    classes -> ids 1..90 with gaps). Classes with no category are left out (their boxes are dropped).
    """
    by_name = {str(c["name"]).lower(): int(c["id"]) for c in categories}
    mapping = {i: by_name[n.lower()] for i, n in enumerate(class_names) if n.lower() in by_name}
    if len(mapping) == len(class_names) == len(categories):
        return mapping
    if len(class_names) == len(categories) and len(mapping) < len(class_names):
        ordered = sorted(int(c["id"]) for c in categories)
        log.warning("class names do not match the annotation's categories; mapping by position")
        return dict(enumerate(ordered))
    if len(mapping) < len(class_names):
        log.warning(
            "%d of %d model classes have no category in the annotations; their boxes are not scored",
            len(class_names) - len(mapping),
            len(class_names),
        )
    return mapping


def coco_detections(
    detections: Iterable[Detection], image_id: int, category_ids: Mapping[int, int]
) -> List[Dict[str, Any]]:
    """COCO results entries ({image_id, category_id, bbox [x, y, w, h], score}) for one image."""
    out = []
    for d in detections:
        cat = category_ids.get(d.class_id)
        if cat is None:
            continue
        out.append(
            {
                "image_id": int(image_id),
                "category_id": cat,
                "bbox": [
                    round(d.x1, 3),
                    round(d.y1, 3),
                    round(d.x2 - d.x1, 3),
                    round(d.y2 - d.y1, 3),
                ],
                "score": round(d.score, 5),
            }
        )
    return out


def run_cocoeval(
    coco: Any, results: List[Dict[str, Any]], image_ids: Sequence[int]
) -> Tuple[List[float], Dict[int, Optional[float]], str]:
    """(the 12 COCO stats, AP@0.5:0.95 per category id (None without ground truth), summary text)."""
    _, cocoeval_cls = _pycocotools()
    cat_ids = sorted(coco.getCatIds())
    if not results:
        return (
            [0.0] * 12,
            {c: (0.0 if coco.getAnnIds(catIds=[c], imgIds=list(image_ids)) else None) for c in cat_ids},
            "",
        )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = coco.loadRes(results)
        ev = cocoeval_cls(coco, dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [iou thresholds, recall, category, area, max dets]
    per_class: Dict[int, Optional[float]] = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        per_class[int(cat)] = float(np.mean(valid)) if valid.size else None
    stats = [float(s) for s in ev.stats]
    lines = [line for line in buf.getvalue().splitlines() if "Average" in line]
    return stats, per_class, "\n".join(lines)
