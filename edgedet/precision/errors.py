"""Errors of the precision tools (quantization, calibration, mixed-precision search).

They derive from ``edgedet.errors.EdgedetError`` so the CLI prints them as one line and exits non-zero.
"""

from __future__ import annotations

from edgedet.errors import EdgedetError


class PrecisionError(EdgedetError):
    """Quantization, FP16 conversion or the mixed-precision search cannot proceed."""


class CalibrationError(PrecisionError):
    """The calibration data is missing, empty, unreadable or does not fit the model."""
