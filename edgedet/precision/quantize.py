"""INT8 Q/DQ ONNX for TensorRT: symmetric int8, per-channel weights, per-tensor activations.

Placement follows what TensorRT's explicit-quantization builder (8.5-10) fuses and what NVIDIA's QAT
tools export: a QuantizeLinear/DequantizeLinear pair on each Conv's activation input and on its float
weights (per output channel, axis 0), zero points 0, the bias left in float, and no Q/DQ on Conv outputs
(TensorRT fuses Conv+bias+activation and requantizes at the next Q). The graph is built by
``onnxruntime.quantization.quantize_static`` (QDQ format) from ranges we calibrate ourselves
(``edgedet.precision.ranges``), so any calibration method reuses one calibration pass.

Layers kept in float are removed from a fully quantized graph by bypassing their Q/DQ pairs
(``strip_layers``): the mixed-precision search builds each trial model that way in milliseconds.

Models that already hold QuantizeLinear nodes (QAT exports from pytorch-quantization or ModelOpt) are
accepted unchanged: ``quantize`` copies them and says so.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgedet.backends.tensorrt.layers import load_layer_list
from edgedet.errors import ModelError, require
from edgedet.precision.calibration import CalibrationSet, load_calibration
from edgedet.precision.errors import PrecisionError
from edgedet.precision.ranges import METHODS, RangeTable, collect, file_sha256

log = logging.getLogger(__name__)

QDQ_OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger")
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ConvLayer:
    """A quantizable Conv: its node name, the name TensorRT will know it by, and its work."""

    name: str  # ONNX node name in the prepared model
    trt_name: str  # name for the float-layer list: the original node name, else its output tensor
    activation: str  # the input tensor that gets a Q/DQ pair
    output: str
    macs: int  # multiply-accumulates for one image
    depthwise: bool


@dataclass
class QuantizeResult:
    path: Path
    method: str
    float_layers: List[str] = field(default_factory=list)  # trt names
    int8_mac_share: float = 1.0
    quantized_layers: int = 0
    skipped: bool = False  # the input was already quantized and was copied unchanged
    message: str = ""
    ranges_path: Optional[Path] = None


# -- model preparation ---------------------------------------------------------------------------------


def load_model(path: PathLike) -> Any:
    onnx: Any = require("onnx", "quantize", "quantization")
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{p} is not a readable ONNX model: {exc}") from exc


def opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def count_quant_nodes(model: Any) -> int:
    return sum(1 for n in model.graph.node if n.op_type in QUANT_OPS)


def prepare(model: Any) -> Any:
    """A copy converted to opset >= 13, with every node named (quantization addresses nodes by name)."""
    onnx: Any = require("onnx", "quantize", "quantization")
    if opset(model) < QDQ_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, QDQ_OPSET)
        except Exception as exc:
            raise PrecisionError(
                f"cannot convert the model from opset {opset(model)} to {QDQ_OPSET}: {exc}"
            ) from exc
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_edgedet_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def conv_layers(model: Any, original: Any = None) -> List[ConvLayer]:
    """Every Conv with a constant weight, with MACs from ONNX shape inference (batch counted as 1)."""
    onnx: Any = require("onnx", "quantize", "quantization")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise PrecisionError(f"ONNX shape inference failed: {exc}") from exc
    shapes: Dict[str, List[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    named = {n.name for n in (original or model).graph.node if n.name}
    layers: List[ConvLayer] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        out = shapes.get(node.output[0])
        if out is None or len(w) < 3:
            raise PrecisionError(f"cannot infer the output shape of {node.name}; is the input shape fixed?")
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        macs = int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        layers.append(
            ConvLayer(
                name=node.name,
                trt_name=node.name if node.name in named else node.output[0],
                activation=node.input[0],
                output=node.output[0],
                macs=macs,
                depthwise=group > 1 and group == w[0],
            )
        )
    if not layers:
        raise PrecisionError("the model has no Conv with constant weights: nothing to quantize")
    return layers


def int8_share(layers: Sequence[ConvLayer], float_names: Set[str]) -> float:
    total = sum(c.macs for c in layers)
    kept = sum(c.macs for c in layers if c.name not in float_names)
    return kept / total if total else 0.0


# -- calibration -------------------------------------------------------------------------------------------


def calibrate(prepared: Any, calibration: Any, model_sha256: str = "") -> RangeTable:
    """One calibration pass over ``calibration`` (a CalibrationSet) for every Conv activation input."""
    tensors = sorted({c.activation for c in conv_layers(prepared)})
    return collect(prepared, tensors, calibration.feeds(), model_sha256=model_sha256)


# -- Q/DQ graph ---------------------------------------------------------------------------------------------


class _DropOrtChatter(logging.Filter):
    """quantize_static logs generic advice on the root logger ("consider pre-processing"); ours is set."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    root = logging.getLogger()
    filt = _DropOrtChatter()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def build_qdq(prepared: Any, ranges: Dict[str, float], exclude: Sequence[str] = ()) -> Any:
    """The Q/DQ model (ModelProto) of ``prepared`` with every Conv but ``exclude`` quantized."""
    onnx: Any = require("onnx", "quantize", "quantization")
    quant: Any = require("onnxruntime.quantization", "quantize", "quantization")
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    data = {
        name: TensorData(lowest=np.array(-t, dtype=np.float32), highest=np.array(t, dtype=np.float32))
        for name, t in ranges.items()
    }
    tensors = TensorsData(quant.CalibrationMethod.MinMax, data)
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        # TensorRT 8.x parses DequantizeLinear only on float-typed (activation) inputs: weights keep a
        # float initializer feeding a Q/DQ pair, biases stay float (no int32 DequantizeLinear)
        "AddQDQPairToWeight": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": ["Conv"],
    }
    with tempfile.TemporaryDirectory(prefix="edgedet-q-") as tmp:
        src = os.path.join(tmp, "model.onnx")
        dst = os.path.join(tmp, "qdq.onnx")
        onnx.save(prepared, src)
        kwargs: Dict[str, Any] = {
            "quant_format": quant.QuantFormat.QDQ,
            "op_types_to_quantize": ["Conv"],
            "per_channel": True,
            "reduce_range": False,
            "activation_type": quant.QuantType.QInt8,
            "weight_type": quant.QuantType.QInt8,
            "nodes_to_exclude": list(exclude),
            "calibrate_method": quant.CalibrationMethod.MinMax,
            "extra_options": extra,
        }
        try:
            with _quiet_ort():
                if "calibration_cache_path" in inspect.signature(quant.quantize_static).parameters:
                    from onnxruntime.quantization.calibrate import save_tensors_data

                    cache = os.path.join(tmp, "ranges.json")
                    save_tensors_data(tensors, cache)
                    quant.quantize_static(src, dst, None, calibration_cache_path=cache, **kwargs)
                else:
                    _quantize_with_ranges(src, dst, tensors, kwargs)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise PrecisionError(f"onnxruntime quantization failed: {exc}") from exc
        return onnx.load(dst)


def _quantize_with_ranges(src: str, dst: str, tensors: Any, kw: Dict[str, Any]) -> None:
    """What quantize_static does after calibration, for onnxruntime releases without a range cache."""
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    model = load_model_with_shape_infer(Path(src))
    quantizer = QDQQuantizer(
        model,
        kw["per_channel"],
        kw["reduce_range"],
        kw["weight_type"],
        kw["activation_type"],
        tensors,
        [],
        kw["nodes_to_exclude"],
        kw["op_types_to_quantize"],
        kw["extra_options"],
    )
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(dst, False)


def strip_layers(qdq: Any, layers: Set[str]) -> Any:
    """A copy of ``qdq`` where the named nodes read their float inputs again (their Q/DQ bypassed);
    Q/DQ nodes and initializers left unused are removed."""
    onnx: Any = require("onnx", "quantize", "quantization")
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    found = set()
    for node in graph.node:
        if node.name not in layers:
            continue
        found.add(node.name)
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                raise PrecisionError(f"{node.name}: input {name} is not a Q/DQ pair on a float tensor")
            node.input[i] = q.input[0]
    missing = layers - found
    if missing:
        raise PrecisionError(f"no such layer(s) in the model: {', '.join(sorted(missing))}")
    _prune(graph)
    return model


def _prune(graph: Any) -> None:
    keep_outputs = {o.name for o in graph.output}
    while True:
        used = set(keep_outputs)
        for node in graph.node:
            used.update(node.input)
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for vi in [v for v in graph.value_info if v.name not in used and v.name not in keep_outputs]:
        graph.value_info.remove(vi)


def tag_model(model: Any, info: Dict[str, Any]) -> None:
    """Record how the model was made in its metadata (key ``edgedet.quantization``)."""
    for prop in list(model.metadata_props):
        if prop.key == "edgedet.quantization":
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = "edgedet.quantization"
    entry.value = json.dumps(info, sort_keys=True)


def save_model(model: Any, path: PathLike) -> Path:
    onnx: Any = require("onnx", "quantize", "quantization")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


# -- float-layer list (read by edgedet/backends/trt_layers.py) ---------------------------------------


def write_float_layers(path: PathLike, layers: Sequence[str], model_sha256: str, **info: Any) -> Path:
    """The layers to keep in float on TensorRT 8.5-10 implicit INT8 builds, as the JSON object
    ``{"layers": [names], "model_sha256": ..., ...}`` that ``backends.tensorrt.layers.load_layer_list`` reads.
    Names are the FP32 ONNX node names (or output tensor names for unnamed nodes); a layer without a
    precision runs in FP16 when the build enables FP16 and in FP32 otherwise."""
    out = Path(path)
    data = {"layers": list(layers), "model_sha256": model_sha256, **info}
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return out


def read_float_layers(path: PathLike) -> List[str]:
    return list(load_layer_list(Path(path)))


# -- the one-call API --------------------------------------------------------------------------------


def quantize(
    fp32_onnx: PathLike,
    calibration: Any,
    out_path: PathLike,
    method: str = "percentile",
    *,
    percentile: float = 99.99,
    float_layers: Sequence[str] = (),
    calib_images: int = 128,
    ranges_path: Optional[PathLike] = None,
    model_cfg: Any = None,
) -> QuantizeResult:
    """Write the INT8 Q/DQ version of ``fp32_onnx`` to ``out_path``.

    ``calibration``: a CalibrationSet, or anything ``load_calibration`` reads (image folder, video, live
    source); ``calib_images`` caps how many are used. ``float_layers``: Conv names (node or trt name)
    left unquantized. ``ranges_path``: where the calibration statistics are written; with
    ``calibration=None`` they are read from there instead (no second calibration pass).
    """
    if method not in METHODS:
        raise PrecisionError(f"unknown calibration method {method!r} (one of {', '.join(METHODS)})")
    started = time.monotonic()
    src = Path(fp32_onnx)
    model = load_model(src)
    out = Path(out_path)
    existing = count_quant_nodes(model)
    if existing:
        if out.resolve() != src.resolve():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
        msg = (
            f"{src} already holds {existing} quantization nodes (a QAT or pre-quantized model): "
            f"copied unchanged to {out}; build it as an explicit INT8 engine"
        )
        log.warning("%s", msg)
        return QuantizeResult(path=out, method="qat", skipped=True, message=msg)
    sha = file_sha256(src)
    prepared = prepare(model)
    layers = conv_layers(prepared, model)
    names = _resolve_layers(layers, float_layers)
    table = obtain_ranges(prepared, calibration, src, sha, calib_images, ranges_path, model_cfg)
    ranges = table.ranges(method, percentile)
    qdq = build_qdq(prepared, ranges, exclude=sorted(names))
    share = int8_share(layers, names)
    trt_names = [c.trt_name for c in layers if c.name in names]
    tag_model(
        qdq,
        {
            "method": method,
            "source_sha256": sha,
            "float_layers": trt_names,
            "int8_mac_share": round(share, 4),
        },
    )
    save_model(qdq, out)
    msg = (
        f"wrote {out}: {len(layers) - len(names)} of {len(layers)} Conv layers in INT8 "
        f"({share:.1%} of conv MACs), {method} ranges from {table.images} images, "
        f"{time.monotonic() - started:.1f} s"
    )
    log.info("%s", msg)
    return QuantizeResult(
        path=out,
        method=method,
        float_layers=trt_names,
        int8_mac_share=share,
        quantized_layers=len(layers) - len(names),
        message=msg,
        ranges_path=Path(ranges_path) if ranges_path else None,
    )


def _resolve_layers(layers: Sequence[ConvLayer], wanted: Sequence[str]) -> Set[str]:
    by_any = {c.name: c.name for c in layers}
    by_any.update({c.trt_name: c.name for c in layers})
    unknown = [w for w in wanted if w not in by_any]
    if unknown:
        raise PrecisionError(f"float layer(s) not among the model's Conv layers: {', '.join(unknown[:10])}")
    return {by_any[w] for w in wanted}


def obtain_ranges(
    prepared: Any,
    calibration: Any,
    src: Path,
    sha: str,
    calib_images: int,
    ranges_path: Optional[PathLike],
    model_cfg: Any = None,
) -> RangeTable:
    """Calibration statistics: measured on ``calibration`` (and saved to ``ranges_path``), or -- when no
    calibration data is given -- loaded from ``ranges_path``, which must have been made for this model."""
    if calibration is None and ranges_path is not None and Path(ranges_path).is_file():
        table = RangeTable.load(ranges_path)
        if table.model_sha256 != sha:
            raise PrecisionError(
                f"{ranges_path} holds calibration ranges of another model; give --calib data"
            )
        log.info("reusing calibration ranges %s (%d images)", ranges_path, table.images)
        return table
    if calibration is None:
        raise PrecisionError("calibration data is needed (an image folder, a video file or a live source)")

    calib = calibration
    if not isinstance(calib, CalibrationSet):
        calib = load_calibration(calibration, src, limit=calib_images, model_cfg=model_cfg)
    table = calibrate(prepared, calib, sha)
    if ranges_path is not None:
        table.save(ranges_path)
    return table


def model_size(path: PathLike) -> int:
    return Path(path).stat().st_size


def summarize_qdq(model: Any) -> Tuple[int, int]:
    """(QuantizeLinear count, DequantizeLinear count)."""
    q = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
    return q, dq
