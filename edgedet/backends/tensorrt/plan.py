"""Which ONNX to parse and which precision switches to set, per TensorRT version (pure; no TensorRT).

TensorRT 8.5-10 build "weakly typed" networks: precision comes from builder flags (FP16, INT8), INT8 from a
calibrator or from Q/DQ nodes. TensorRT 11 removed those flags and the calibrators: every network is
strongly typed, so precision comes from the ONNX itself (an FP16 ONNX for FP16, a Q/DQ ONNX for INT8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edgedet.errors import BackendError

STRONGLY_TYPED_FROM = 11  # first TensorRT major version without FP16/INT8 builder flags and calibrators
DLA_ON_11_FROM = 4  # TensorRT 11.0-11.3 are for data-centre GPUs: JetPack and the DLA arrived in 11.4


@dataclass(frozen=True)
class BuildPlan:
    onnx: Path  # the file TensorRT parses
    precision: str  # as configured: fp32 | fp16 | int8 | best
    fp16_flag: bool  # set BuilderFlag.FP16 (TensorRT < 11)
    int8_flag: bool  # set BuilderFlag.INT8 (TensorRT < 11)
    needs_qdq: bool  # the parsed network must hold Q/DQ layers (INT8 on TensorRT 11)
    may_calibrate: bool  # implicit calibration is allowed if the network holds no Q/DQ layers
    strongly_typed: bool
    layer_overrides: bool  # apply the float-layer list (layer.precision + OBEY_PRECISION_CONSTRAINTS)
    notes: Tuple[str, ...] = ()


def plan_build(
    precision: str,
    trt_major: int,
    model: Path,
    qdq_model: Optional[Path] = None,
    fp16_model: Optional[Path] = None,
    has_float_layers: bool = False,
    trt_minor: int = 0,
    dla_core: Optional[int] = None,
) -> BuildPlan:
    if precision not in ("fp32", "fp16", "int8", "best"):
        raise BackendError(f"unknown precision {precision!r} (fp32, fp16, int8 or best)")
    notes = []
    if trt_major == STRONGLY_TYPED_FROM and trt_minor < DLA_ON_11_FROM and dla_core is not None:
        raise BackendError(
            f"TensorRT {trt_major}.{trt_minor} has no DLA support (it came with TensorRT 11.4 for AGX Orin "
            "and Thor): remove backend.dla_core"
        )
    if trt_major >= STRONGLY_TYPED_FROM:
        if has_float_layers:
            notes.append(
                "backend.float_layers is ignored on TensorRT 11 (strongly typed): leave those layers "
                "without Q/DQ nodes in the Q/DQ model instead"
            )
        if precision == "fp32":
            return BuildPlan(model, precision, False, False, False, False, True, False, tuple(notes))
        if precision == "fp16":
            if fp16_model is None:
                raise BackendError(
                    "TensorRT 11 builds strongly typed networks, so FP16 needs an FP16 ONNX: run "
                    "`edgedet quantize --fp16` and set backend.fp16_model (or use precision fp32)"
                )
            return BuildPlan(fp16_model, precision, False, False, False, False, True, False, tuple(notes))
        if precision == "int8" or qdq_model is not None:
            source = qdq_model or model
            if precision == "best" and fp16_model is not None:
                notes.append(
                    "precision best on TensorRT 11 builds only backend.qdq_model: its layers without Q/DQ "
                    "nodes run in that model's own float type, and backend.fp16_model is not used (make "
                    "the Q/DQ model from the FP16 model for INT8 with FP16 fallback)"
                )
            if qdq_model is None:
                notes.append(
                    "TensorRT 11 has no INT8 calibration: model.path itself must be a Q/DQ ONNX "
                    "(edgedet quantize makes one; set backend.qdq_model)"
                )
            return BuildPlan(source, precision, False, False, True, False, True, False, tuple(notes))
        # best without a Q/DQ model
        if fp16_model is not None:
            notes.append("precision best without backend.qdq_model on TensorRT 11: building the FP16 model")
            return BuildPlan(fp16_model, precision, False, False, False, False, True, False, tuple(notes))
        raise BackendError(
            "precision best on TensorRT 11 needs backend.qdq_model (INT8) or backend.fp16_model (FP16)"
        )

    # TensorRT 8.5 - 10
    if fp16_model is not None:
        notes.append("backend.fp16_model is only used on TensorRT 11; this build sets the FP16 flag instead")
    int8 = precision in ("int8", "best")
    fp16 = precision in ("fp16", "best")
    source = qdq_model if (int8 and qdq_model is not None) else model
    if qdq_model is not None and not int8:
        notes.append(f"backend.qdq_model is only used for int8/best; building {model.name} in {precision}")
    return BuildPlan(
        onnx=source,
        precision=precision,
        fp16_flag=fp16,
        int8_flag=int8,
        needs_qdq=False,
        may_calibrate=int8 and qdq_model is None,
        strongly_typed=False,
        layer_overrides=has_float_layers and precision != "fp32",
        notes=tuple(notes),
    )


def reported_precision(precision: str, float_layers: bool) -> str:
    """What Backend.precision reports: fp32, fp16, int8 or mixed."""
    if precision == "best" or (precision == "int8" and float_layers):
        return "mixed"
    return precision
