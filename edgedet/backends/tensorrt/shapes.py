"""Shapes, dtypes and optimization profiles for TensorRT engines, without TensorRT.

TensorRT reports dimensions as ints with -1 for a dynamic one and data types by enum name; everything
that decides what to do with them lives here, so it can be tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from edgedet.errors import BackendError

# TensorRT DataType member name -> numpy dtype name (None: numpy has no such type)
TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "BF16": None,
    "FP8": None,
    "INT4": None,
    "FP4": None,
    "E8M0": None,
}


def numpy_dtype(trt_name: str, tensor: str) -> str:
    """The numpy dtype for a TensorRT DataType name; BackendError for types numpy cannot hold."""
    name = trt_name.split(".")[-1].upper()
    if name not in TRT_DTYPES:
        raise BackendError(
            f"tensor {tensor!r} has TensorRT data type {trt_name}, which edgedet does not know"
        )
    dtype = TRT_DTYPES[name]
    if dtype is None:
        raise BackendError(
            f"tensor {tensor!r} is {name} at the engine's boundary; edgedet needs float32/float16/int "
            "inputs and outputs (keep the model's I/O in FP32 or FP16 when exporting)"
        )
    return dtype


def spec_shape(dims: Sequence[int]) -> Tuple[Optional[int], ...]:
    """TensorRT dims (-1 dynamic) as a TensorSpec shape (None dynamic)."""
    return tuple(None if int(d) < 0 else int(d) for d in dims)


def is_dynamic(dims: Sequence[int]) -> bool:
    return any(int(d) < 0 for d in dims)


@dataclass(frozen=True)
class Profile:
    """One optimization profile for one input: the min/opt/max shapes TensorRT tunes for."""

    name: str
    min: Tuple[int, ...]
    opt: Tuple[int, ...]
    max: Tuple[int, ...]

    @property
    def batch_range(self) -> Tuple[int, int, int]:
        return (self.min[0], self.opt[0], self.max[0])

    def accepts(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= int(d) <= hi for d, lo, hi in zip(shape, self.min, self.max)
        )


def input_profile(
    name: str,
    dims: Sequence[int],
    max_batch: int,
    opt_batch: Optional[int] = None,
    fixed_size: Optional[Tuple[int, int]] = None,
) -> Profile:
    """The profile for an ONNX input with ``dims`` (-1 dynamic), batching up to ``max_batch``.

    A dynamic batch axis ranges 1..max_batch (tuned for ``opt_batch``, default max_batch). A fixed batch
    axis must cover max_batch. Other dynamic axes need ``fixed_size`` (width, height) for NCHW images.
    """
    dims = [int(d) for d in dims]
    if not dims:
        raise BackendError(f"input {name!r} is a scalar; edgedet feeds batched tensors")
    if max_batch < 1:
        raise BackendError(f"max_batch must be at least 1, not {max_batch}")
    opt = max_batch if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise BackendError(f"opt batch {opt} is outside 1..{max_batch}")
    rest = list(dims[1:])
    for axis, d in enumerate(rest, start=1):
        if d >= 0:
            continue
        if fixed_size is not None and len(dims) == 4 and axis in (2, 3):
            rest[axis - 1] = int(fixed_size[1] if axis == 2 else fixed_size[0])
        else:
            raise BackendError(
                f"input {name!r} {dims} has a dynamic axis {axis}; only the batch axis may be dynamic "
                "(set model.input_size for a dynamic image size)"
            )
    if dims[0] < 0:
        return Profile(name, (1, *rest), (opt, *rest), (max_batch, *rest))
    if dims[0] < max_batch:
        raise BackendError(
            f"input {name!r} has a fixed batch of {dims[0]}, so the engine cannot batch {max_batch} frames; "
            "export the ONNX with a dynamic batch axis or lower backend.max_batch"
        )
    fixed = (dims[0], *rest)
    return Profile(name, fixed, fixed, fixed)


def check_feed(name: str, shape: Sequence[int], profile: Profile) -> None:
    """BackendError naming the allowed range when ``shape`` is outside the engine's profile."""
    if not profile.accepts(shape):
        lo, hi = list(profile.min), list(profile.max)
        raise BackendError(
            f"input {name!r} has shape {list(shape)}; the engine accepts {lo} .. {hi}"
            + (
                " (a larger batch needs a rebuild with a higher backend.max_batch)"
                if lo[1:] == hi[1:]
                else ""
            )
        )


def split_batches(total: int, max_batch: int) -> List[Tuple[int, int]]:
    """[start, stop) ranges covering ``total`` items in chunks of at most ``max_batch``."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    return [(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def volume(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out
