"""Drawing boxes, labels, zones and lines on BGR images (OpenCV; the `cv` extra or JetPack's OpenCV).

Labels are dark or light text on a filled box of the object's colour, so they read on any background.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edgedet.errors import require
from edgedet.tracking.geometry import Point

Color = Tuple[int, int, int]
_FONT_SCALE = 0.5
_THICKNESS = 1


def _cv2() -> Any:
    return require("cv2", "cv", "drawing on images")


def _px(p: Point) -> Tuple[int, int]:
    return (round(float(p[0])), round(float(p[1])))


def color_for(key: int) -> Color:
    """A stable, saturated colour per class or track id."""
    rng = np.random.default_rng(key)
    return tuple(int(c) for c in rng.integers(40, 256, size=3))  # type: ignore[return-value]


def _text_color(background: Color) -> Color:
    b, g, r = background
    luminance = 0.114 * b + 0.587 * g + 0.299 * r
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def label(image: np.ndarray, text: str, anchor: Tuple[int, int], color: Color, above: bool = True) -> None:
    """Text on a filled box whose bottom-left (``above``) or top-left corner is ``anchor``."""
    cv2 = _cv2()
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _THICKNESS)
    h, w = image.shape[:2]
    pad = 3
    x = max(0, min(int(anchor[0]), w - tw - 2 * pad))
    y_top = int(anchor[1]) - th - base - 2 * pad if above else int(anchor[1])
    if y_top < 0:
        y_top = int(anchor[1]) if above else 0
    y_top = max(0, min(y_top, h - th - base - 2 * pad))
    cv2.rectangle(image, (x, y_top), (x + tw + 2 * pad, y_top + th + base + 2 * pad), color, -1)
    cv2.putText(
        image,
        text,
        (x + pad, y_top + pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        _FONT_SCALE,
        _text_color(color),
        _THICKNESS,
        cv2.LINE_AA,
    )


def box(
    image: np.ndarray,
    xyxy: Sequence[float],
    color: Color,
    text: Optional[str] = None,
    thickness: int = 2,
) -> None:
    cv2 = _cv2()
    p1, p2 = _px((xyxy[0], xyxy[1])), _px((xyxy[2], xyxy[3]))
    cv2.rectangle(image, p1, p2, color, thickness)
    if text:
        label(image, text, (p1[0], p1[1]), color)


def zone(image: np.ndarray, polygon: Sequence[Point], name: str, color: Color = (255, 160, 0)) -> None:
    """A translucent filled polygon with its outline and name."""
    cv2 = _cv2()
    pts = np.array([_px(p) for p in polygon], dtype=np.int32)
    overlay = image.copy()
    cv2.fillPoly(overlay, [pts], color)
    cv2.addWeighted(overlay, 0.2, image, 0.8, 0, dst=image)
    cv2.polylines(image, [pts], True, color, 2, cv2.LINE_AA)
    top = pts[np.argmin(pts[:, 1])]
    label(image, name, (int(top[0]), int(top[1])), color, above=False)


def line(image: np.ndarray, a: Point, b: Point, text: str, color: Color = (0, 200, 255)) -> None:
    """A directed line with an arrow head at B and a label near A."""
    cv2 = _cv2()
    pa, pb = _px(a), _px(b)
    cv2.arrowedLine(image, pa, pb, color, 2, cv2.LINE_AA, tipLength=0.03)
    label(image, text, pa, color)
