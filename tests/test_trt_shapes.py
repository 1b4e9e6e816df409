"""Shapes, dtypes and optimization profiles (pure)."""

from __future__ import annotations

import pytest

from edgedet.backends.tensorrt.shapes import (
    Profile,
    check_feed,
    input_profile,
    is_dynamic,
    numpy_dtype,
    spec_shape,
    split_batches,
)
from edgedet.errors import BackendError


def test_tensorrt_dtypes_map_to_numpy_and_unsupported_ones_are_named_errors() -> None:
    assert numpy_dtype("FLOAT", "x") == "float32"
    assert numpy_dtype("DataType.HALF", "x") == "float16"
    assert numpy_dtype("INT64", "x") == "int64"
    with pytest.raises(BackendError, match="BF16"):
        numpy_dtype("BF16", "images")
    with pytest.raises(BackendError, match="does not know"):
        numpy_dtype("COMPLEX", "images")


def test_spec_shape_and_dynamic() -> None:
    assert spec_shape((-1, 3, 416, 416)) == (None, 3, 416, 416)
    assert is_dynamic((-1, 3, 416, 416)) and not is_dynamic((1, 3, 416, 416))


def test_dynamic_batch_profile() -> None:
    p = input_profile("images", (-1, 3, 416, 416), max_batch=4)
    assert p.min == (1, 3, 416, 416) and p.opt == (4, 3, 416, 416) and p.max == (4, 3, 416, 416)
    assert p.batch_range == (1, 4, 4)
    p = input_profile("images", (-1, 3, 416, 416), max_batch=4, opt_batch=2)
    assert p.opt[0] == 2
    with pytest.raises(BackendError, match="opt batch"):
        input_profile("images", (-1, 3, 416, 416), max_batch=4, opt_batch=5)


def test_fixed_batch_profile() -> None:
    p = input_profile("images", (1, 3, 416, 416), max_batch=1)
    assert p.min == p.opt == p.max == (1, 3, 416, 416)
    with pytest.raises(BackendError, match="fixed batch of 1"):
        input_profile("images", (1, 3, 416, 416), max_batch=4)


def test_dynamic_image_size_needs_a_size() -> None:
    with pytest.raises(BackendError, match="input_size"):
        input_profile("images", (-1, 3, -1, -1), max_batch=2)
    p = input_profile("images", (-1, 3, -1, -1), max_batch=2, fixed_size=(640, 384))
    assert p.max == (2, 3, 384, 640)
    with pytest.raises(BackendError, match="dynamic axis 1"):
        input_profile("images", (-1, -1, 416, 416), max_batch=2)
    with pytest.raises(BackendError, match="scalar"):
        input_profile("x", (), max_batch=1)


def test_check_feed_accepts_shapes_in_the_profile_and_names_the_fix_otherwise() -> None:
    p = Profile("images", (1, 3, 416, 416), (4, 3, 416, 416), (4, 3, 416, 416))
    check_feed("images", (3, 3, 416, 416), p)
    with pytest.raises(BackendError, match=r"higher backend\.max_batch"):
        check_feed("images", (5, 3, 416, 416), p)
    with pytest.raises(BackendError, match=r"\[1, 3, 416, 416\]"):
        check_feed("images", (1, 3, 640, 640), p)


def test_split_batches() -> None:
    assert split_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert split_batches(4, 4) == [(0, 4)]
    assert split_batches(0, 4) == []
    with pytest.raises(ValueError):
        split_batches(3, 0)
