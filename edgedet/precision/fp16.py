"""FP16 ONNX: weights and activations in float16, inputs and outputs kept float32.

Uses onnxconverter-common's ``float16.convert_float_to_float16(keep_io_types=True)``, which inserts
Cast nodes at the graph boundary and leaves ops without FP16 kernels (its default block list) in float32.
The result is the model to give a strongly typed TensorRT 11 build; TensorRT 8.5-10 builds FP16 engines
from the FP32 model directly.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from edgedet.errors import require
from edgedet.precision import quantize as q
from edgedet.precision.errors import PrecisionError

log = logging.getLogger(__name__)


def convert_fp16(
    fp32_onnx: Union[str, Path],
    out_path: Union[str, Path],
    *,
    keep_io_types: bool = True,
    op_block_list: Optional[Sequence[str]] = None,
) -> Path:
    """Write the FP16 version of ``fp32_onnx`` to ``out_path`` and return the path.

    ``op_block_list`` replaces onnxconverter-common's default list of op types left in float32.
    Weights beyond the float16 range are clamped by the converter (counted in the log).
    """
    require("onnxconverter_common", "quantize", "FP16 conversion")
    onnx: Any = require("onnx", "quantize", "FP16 conversion")
    from onnxconverter_common import float16

    model = q.load_model(fp32_onnx)
    if q.count_quant_nodes(model):
        raise PrecisionError(f"{fp32_onnx} is an INT8 (Q/DQ) model; convert the FP32 model to FP16")
    kwargs: dict = {"keep_io_types": keep_io_types}
    if op_block_list is not None:
        kwargs["op_block_list"] = list(op_block_list)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            half = float16.convert_float_to_float16(model, **kwargs)
        except Exception as exc:  # the converter raises plain Exceptions/ValueErrors
            raise PrecisionError(f"FP16 conversion of {fp32_onnx} failed: {exc}") from exc
    clamped = [w for w in caught if "truncated" in str(w.message)]
    if clamped:
        # tiny weights (|w| < 1e-7) flush to the float16 minimum; harmless for BN-folded convs
        log.info("FP16: %d weight values outside the float16 range were clamped", len(clamped))
    try:
        onnx.checker.check_model(half)
    except Exception as exc:
        raise PrecisionError(f"the FP16 model does not pass the ONNX checker: {exc}") from exc
    q.tag_model(half, {"precision": "fp16", "keep_io_types": keep_io_types})
    out = q.save_model(half, out_path)
    log.info("wrote %s (FP16, %s IO)", out, "float32" if keep_io_types else "float16")
    return out
