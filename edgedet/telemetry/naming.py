"""Names of rails and temperature zones, made unique within one reading."""

from __future__ import annotations

from typing import Mapping


def unique_name(name: str, taken: Mapping[str, object]) -> str:
    """A repeated name (AGX Orin prints two ``NC`` rails; hwmon chips repeat labels) gets ``_2``, ``_3``
    ... instead of overwriting the first."""
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"
