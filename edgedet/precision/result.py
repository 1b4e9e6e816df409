"""What a mixed-precision search found: its steps, per-layer sensitivities and the chosen model.

Its own module so that the search (sensitivity.py) and its report (report.py) both depend on it and not
on each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


@dataclass
class LayerSensitivity:
    name: str
    trt_name: str
    macs: int
    depthwise: bool
    error: float  # output error vs FP32 with only this layer quantized (normalised MSE)


@dataclass
class Step:
    index: int
    phase: str  # "fp32", "int8", "grow", "bisect", "requantize"
    float_layers: List[str]  # node names
    int8_mac_share: float
    map50_95: float
    map50: float
    passed: bool
    seconds: float


@dataclass
class SearchResult:
    qdq_path: Path
    float_layers_path: Path
    report_path: Optional[Path]
    plot_path: Optional[Path]
    ranges_path: Path
    fp32_map50_95: float
    fp32_map50: float
    map50_95: float
    map50: float
    int8_mac_share: float
    float_layers: List[str]  # TensorRT names
    within_budget: bool
    max_map_drop: float
    message: str
    method: str
    steps: List[Step] = field(default_factory=list)
    sensitivities: List[LayerSensitivity] = field(default_factory=list)
    seconds: float = 0.0
    eval_images: int = 0
    calib_images: int = 0
    model: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("qdq_path", "float_layers_path", "report_path", "plot_path", "ranges_path"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d
