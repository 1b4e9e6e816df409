"""The per-layer precision list: which layers an INT8 engine keeps in floating point.

Produced by ``edgedet quantize`` (sensitivity-guided mixed precision) or written by hand, and applied by the
engine builder on TensorRT 8.5-10 implicit-precision builds (``layer.precision``/``set_output_type`` plus
OBEY_PRECISION_CONSTRAINTS). On TensorRT 11 networks are strongly typed: there the same layers must simply
have no Q/DQ nodes in the ONNX, and this list is not needed.

Two accepted file formats (the suffix ``.json`` selects JSON):

Text, one layer per line; ``#`` at the start or after a space starts a comment; blank lines are
ignored; an optional last word ``fp16`` or ``fp32`` sets the precision (default: see below)::

    # kept in float by edgedet quantize, budget 0.01 mAP
    /backbone/backbone/stem/conv/conv/Conv
    /head/cls_preds.0/Conv  fp32

JSON: a list of names, a list of ``{"name": ..., "precision": ...}``, or an object with a ``layers`` key
holding either of those or a ``{name: precision}`` mapping::

    {"layers": ["/backbone/backbone/stem/conv/conv/Conv", {"name": "/head/cls_preds.0/Conv",
     "precision": "fp32"}]}

Names are ONNX node names (which TensorRT's ONNX parser gives to the layers it creates) or ONNX tensor
names (matched against layer outputs). A layer without a precision runs in FP16 when the build enables
FP16 (precision ``best``) and in FP32 otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgedet.errors import ConfigError

PRECISIONS = ("fp16", "fp32")

_COMMENT = re.compile(r"(?:^|\s)#")  # a whole-line or trailing comment (after whitespace)

LayerOverrides = Dict[str, Optional[str]]  # name -> "fp16" | "fp32" | None (the build's float default)


def parse_layer_list(text: str, source: str = "<layers>", as_json: Optional[bool] = None) -> LayerOverrides:
    """Parse a layer precision list (text or JSON, see the module doc); raise ConfigError with the line."""
    if as_json is None:
        as_json = text.lstrip().startswith(("[", "{"))
    return _parse_json(text, source) if as_json else _parse_text(text, source)


def load_layer_list(path: Path) -> LayerOverrides:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the layer precision list: {exc}") from exc
    as_json = True if Path(path).suffix.lower() == ".json" else None
    return parse_layer_list(text, str(path), as_json)


def _parse_text(text: str, source: str) -> LayerOverrides:
    out: LayerOverrides = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.split(raw, 1)[0].strip()
        if not line:
            continue
        words = line.split()
        precision: Optional[str] = None
        if len(words) > 1 and words[-1].lower() in PRECISIONS:
            precision = words[-1].lower()
            name = line.rsplit(None, 1)[0].strip()
        elif len(words) > 1 and words[-1].lower() in ("int8", "fp8", "bf16", "float16", "float32"):
            raise ConfigError(f"{source}:{number}: precision {words[-1]!r} is not one of fp16, fp32")
        else:
            name = line
        _add(out, name, precision, f"{source}:{number}")
    return out


def _parse_json(text: str, source: str) -> LayerOverrides:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: malformed JSON layer list: {exc}") from exc
    if isinstance(data, dict):
        if "layers" not in data:
            raise ConfigError(f"{source}: a JSON object needs a 'layers' key")
        data = data["layers"]
    out: LayerOverrides = {}
    if isinstance(data, dict):
        for name, precision in data.items():
            _add(out, name, _precision(precision, source, name), source)
        return out
    if not isinstance(data, list):
        raise ConfigError(f"{source}: 'layers' must be a list or a mapping of name to precision")
    for i, item in enumerate(data):
        where = f"{source}: item {i}"
        if isinstance(item, str):
            _add(out, item, None, where)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            _add(out, item["name"], _precision(item.get("precision"), where, item["name"]), where)
        else:
            raise ConfigError(f"{where}: expected a layer name or {{'name': ..., 'precision': ...}}")
    return out


def _precision(value: Any, where: str, name: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in PRECISIONS:
        raise ConfigError(f"{where}: layer {name!r}: precision {value!r} is not one of fp16, fp32")
    return value.lower()


def _add(out: LayerOverrides, name: Any, precision: Optional[str], where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: empty layer name")
    name = name.strip()
    if name in out and out[name] != precision:
        raise ConfigError(f"{where}: layer {name!r} is listed twice with different precisions")
    out[name] = precision


def resolve_overrides(
    overrides: LayerOverrides,
    layers: Sequence[Tuple[str, Sequence[str]]],
    default: str,
) -> Tuple[Dict[int, str], List[str]]:
    """Match the list against the network's layers.

    ``layers`` holds (layer name, output tensor names) in network order. Returns {layer index:
    precision} and the requested names that matched nothing (the builder logs them as a warning: a list
    made for another model or another export is the usual cause).
    """
    if default not in PRECISIONS:
        raise ValueError(f"default precision must be fp16 or fp32, not {default!r}")
    by_name: Dict[str, List[int]] = {}
    for index, (layer_name, outputs) in enumerate(layers):
        by_name.setdefault(layer_name, []).append(index)
        for tensor in outputs:
            by_name.setdefault(tensor, []).append(index)
    matched: Dict[int, str] = {}
    missing: List[str] = []
    for name, precision in overrides.items():
        hits = by_name.get(name)
        if not hits:
            missing.append(name)
            continue
        for index in hits:
            matched[index] = precision or default
    return matched, missing


def overrides_digest_items(overrides: LayerOverrides) -> List[Tuple[str, str]]:
    """A canonical, sorted form for the engine cache key."""
    return sorted((name, precision or "") for name, precision in overrides.items())
