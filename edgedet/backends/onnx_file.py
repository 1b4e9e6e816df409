"""The inputs and outputs an ONNX file declares (names, shapes, dtypes), read without the onnx package.

The TensorRT path must know the model's input before any backend is open (the preprocessing goes into
the engine key, and a static model needs no per-slot optimization profiles), and JetPack does not ship
the ``onnx`` package. An ONNX file is a protobuf ``ModelProto``; this reads just the fields needed
(graph 7 > input 11 / output 12 / initializer 5 > ValueInfoProto name 1, type 2 > tensor_type 1 >
elem_type 1, shape 2 > dim 1 > dim_value 1 | dim_param 2), skipping everything else by its length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

from edgedet.errors import ModelError
from edgedet.types import TensorSpec

# onnx.TensorProto.DataType -> numpy dtype name
_ELEM_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
}  # fmt: skip


class _Truncated(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated()
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[Tuple[int, object]]:
    """(field number, int or memoryview) for every field of one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Truncated()
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Truncated()


def _sub(value: object) -> memoryview:
    if not isinstance(value, memoryview):
        raise _Truncated()
    return value


def _value_info(buf: memoryview) -> TensorSpec:
    name, dtype = "", "float32"
    shape: List[Optional[int]] = []
    for number, value in _fields(buf):
        if number == 1:
            name = bytes(_sub(value)).decode("utf-8", "replace")
        elif number == 2:
            for tn, tensor_type in _fields(_sub(value)):
                if tn != 1:
                    continue
                for fn, field in _fields(_sub(tensor_type)):
                    if fn == 1 and isinstance(field, int):
                        dtype = _ELEM_TYPES.get(field, f"onnx-type-{field}")
                    elif fn == 2:
                        for dn, dim in _fields(_sub(field)):
                            if dn == 1:
                                shape.append(_dim(_sub(dim)))
    return TensorSpec(name, tuple(shape), dtype)


def _dim(buf: memoryview) -> Optional[int]:
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            return value if value > 0 else None
    return None  # dim_param (a named dynamic axis) or nothing at all


def read_model_io(path: Path) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """(inputs, outputs) of the ONNX file at ``path``; None marks a dynamic dimension. Graph inputs that
    are initializers (old exporters list weights as inputs) are left out. ModelError when unreadable."""
    try:
        data = memoryview(Path(path).read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read the model {path}: {exc}") from exc
    inputs: List[TensorSpec] = []
    outputs: List[TensorSpec] = []
    weights: Set[str] = set()
    try:
        graphs = [_sub(v) for n, v in _fields(data) if n == 7]
        if not graphs:
            raise _Truncated()
        for number, value in _fields(graphs[-1]):
            if number == 11:
                inputs.append(_value_info(_sub(value)))
            elif number == 12:
                outputs.append(_value_info(_sub(value)))
            elif number == 5:
                for tn, tv in _fields(_sub(value)):
                    if tn == 8:
                        weights.add(bytes(_sub(tv)).decode("utf-8", "replace"))
    except _Truncated:
        raise ModelError(f"{path} is not an ONNX model (truncated or not a protobuf ModelProto)") from None
    inputs = [i for i in inputs if i.name not in weights]
    if not inputs or not outputs:
        raise ModelError(f"{path} declares no inputs or no outputs: is it an ONNX model?")
    return inputs, outputs


def has_dynamic_input(inputs: List[TensorSpec]) -> bool:
    return any(d is None for spec in inputs for d in spec.shape)
