"""Plane geometry for zones and lines (pure functions, image coordinates: x right, y down)."""

from __future__ import annotations

from typing import Sequence, Tuple

Point = Tuple[float, float]


def cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): > 0 when b is on the right-hand side of o->a in image coordinates."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """r, known to be collinear with p-q, lies within the segment's bounding box."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether closed segments p1-p2 and q1-q2 share a point (touching counts)."""
    d1, d2 = cross(q1, q2, p1), cross(q1, q2, p2)
    d3, d4 = cross(p1, p2, q1), cross(p1, p2, q2)
    if ((d1 > 0 and d2 < 0) or (d1 < 0 and d2 > 0)) and ((d3 > 0 and d4 < 0) or (d3 < 0 and d4 > 0)):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def self_intersects(polygon: Sequence[Point]) -> bool:
    """Whether any two edges that are not neighbours touch (a bow-tie, a loop, a repeated vertex)."""
    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                # neighbours share a vertex; they are wrong only if they fold back onto each other
                a, b = edges[i], edges[j]
                shared = a[1] if j == i + 1 else a[0]
                other_a = a[0] if j == i + 1 else a[1]
                other_b = b[1] if j == i + 1 else b[0]
                if cross(shared, other_a, other_b) == 0 and _folds_back(shared, other_a, other_b):
                    return True
                continue
            if segments_intersect(edges[i][0], edges[i][1], edges[j][0], edges[j][1]):
                return True
    return False


def _folds_back(shared: Point, a: Point, b: Point) -> bool:
    """Collinear neighbours that overlap (the polygon doubles back on itself)."""
    va = (a[0] - shared[0], a[1] - shared[1])
    vb = (b[0] - shared[0], b[1] - shared[1])
    return va[0] * vb[0] + va[1] * vb[1] > 0 or va == (0.0, 0.0) or vb == (0.0, 0.0)


def area(polygon: Sequence[Point]) -> float:
    """Unsigned area (shoelace)."""
    s = 0.0
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) * 0.5


def contains(polygon: Sequence[Point], p: Point) -> bool:
    """Point in polygon by ray casting (a point exactly on an edge may fall either way)."""
    x, y = p
    inside = False
    n = len(polygon)
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def distance_to_line(a: Point, b: Point, p: Point) -> float:
    """Signed distance of p from the infinite line a->b; > 0 on its right-hand side (image coordinates)."""
    length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    return cross(a, b, p) / length if length > 0 else 0.0


def bottom_centre(box: Tuple[float, float, float, float]) -> Point:
    """The point of an object that touches the ground: where zones and lines are judged."""
    return ((box[0] + box[2]) * 0.5, box[3])
