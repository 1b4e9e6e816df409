"""Class names: COCO-80 built in, or from a list, a labels file, or model metadata (Ultralytics ``names``)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

from edgedet.errors import ModelError

log = logging.getLogger(__name__)

COCO80: List[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

# COCO's category ids for the 80 classes above, in the same order (the official ids have gaps up to 90)
COCO80_CATEGORY_IDS: List[int] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
]  # fmt: skip


def parse_names(value: str) -> List[str]:
    """Parse a ``names`` metadata string: a dict literal ``{0: 'person', ...}`` (Ultralytics), a list
    literal, or JSON. Never evaluates code (``ast.literal_eval`` only). Raises ValueError."""
    text = value.strip()
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a dict or list literal: {text[:60]!r}") from exc
    if isinstance(parsed, Mapping):
        try:
            items = {int(k): str(v) for k, v in parsed.items()}
        except (TypeError, ValueError) as exc:
            raise ValueError("class ids in names must be integers") from exc
        if not items:
            return []
        if min(items) < 0:
            raise ValueError("class ids in names must not be negative")
        # ids with gaps get a placeholder so that index == class id
        return [items.get(i, f"class{i}") for i in range(max(items) + 1)]
    if isinstance(parsed, (list, tuple)):
        return [str(v) for v in parsed]
    raise ValueError(f"expected a dict or a list, got {type(parsed).__name__}")


def read_labels_file(path: Path) -> List[str]:
    """One class name per line; blank lines and lines starting with '#' are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelError(f"labels file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels file {path}: {exc}") from exc
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ModelError(f"labels file {path} has no class names (one per line expected)")
    return names


def resolve_class_names(
    labels: Optional[Union[Sequence[str], str]],
    metadata: Mapping[str, str],
    base_dir: Optional[Path] = None,
) -> List[str]:
    """Names from the config (a list, or a labels file path), else the model's ``names``, else COCO-80."""
    if labels is not None and not isinstance(labels, str):
        return [str(n) for n in labels]
    if isinstance(labels, str):
        path = Path(labels).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return read_labels_file(path)
    raw = metadata.get("names")
    if raw:
        try:
            names = parse_names(raw)
        except ValueError as exc:
            log.warning("ignoring the model's 'names' metadata (%s); using COCO-80 names", exc)
        else:
            if names:
                return names
    return list(COCO80)
