"""The CPU preprocessor against a plain, obviously-correct reference built from its documented math."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedet.assets import DEMO_CLIP
from edgedet.preprocess import make_preprocessor
from edgedet.preprocess.base import letterbox_geometry
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.types import ChannelOrder, InputSpec


def reference(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Letterbox in float64 the slow way: canvas of pad, resized image pasted, channels, affine."""
    h, w = image.shape[:2]
    _, nw, nh, px, py = letterbox_geometry(w, h, spec)
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, dtype=np.float64)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas[int(py) : int(py) + nh, int(px) : int(px) + nw] = resized
    if spec.channel_order == ChannelOrder.RGB:
        canvas = canvas[:, :, ::-1]
    canvas = (canvas * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    return canvas.transpose(2, 0, 1)[None]


def _frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame  # 640x480 real street scene


SPECS = {
    "yolox": InputSpec(name="images", width=416, height=416),
    "ultralytics": InputSpec(
        name="images", width=640, height=640, channel_order=ChannelOrder.RGB, scale=1 / 255, center=True
    ),
    "imagenet-fp16": InputSpec(
        name="x",
        width=320,
        height=256,
        channel_order=ChannelOrder.RGB,
        scale=1 / 255,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        center=True,
        pad_value=0.0,
        dtype="float16",
    ),
    "fp16-plain": InputSpec(name="x", width=416, height=416, scale=1 / 255, dtype="float16", pad_value=127.5),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("size", [(480, 640), (640, 480), (1080, 1920), (416, 416), (37, 1000)])
def test_matches_reference(name: str, size: tuple) -> None:
    spec = SPECS[name]
    rng = np.random.default_rng(7)
    frame = cv2.resize(_frame(), (size[1], size[0]))
    frame[::7] = rng.integers(0, 256, frame[::7].shape, dtype=np.uint8)  # some high-frequency content
    pre = make_preprocessor("cpu", spec)
    out = pre.allocate()
    assert isinstance(out, np.ndarray)
    assert out.shape == (1, 3, spec.height, spec.width) and out.dtype == np.dtype(spec.dtype)
    letterbox = pre.run(frame, out)
    expected = reference(frame, spec)
    # float32: only float rounding; float16: its own rounding (values up to ~2.6)
    tolerance = 1e-4 if spec.dtype == "float32" else 2e-3
    np.testing.assert_allclose(out.astype(np.float64), expected, atol=tolerance, rtol=1e-3)
    scale, _, _, px, py = letterbox_geometry(size[1], size[0], spec)
    assert (letterbox.scale, letterbox.pad_x, letterbox.pad_y) == (scale, px, py)
    assert (letterbox.source_width, letterbox.source_height) == (size[1], size[0])


def test_geometry_top_left_and_centred() -> None:
    spec = SPECS["yolox"]
    assert letterbox_geometry(640, 480, spec) == (0.65, 416, 312, 0.0, 0.0)
    centred = InputSpec(name="i", width=416, height=416, center=True)
    assert letterbox_geometry(1920, 1080, centred) == (416 / 1920, 416, 234, 0.0, 91.0)
    assert letterbox_geometry(470, 640, centred) == (0.65, 305, 416, 55.0, 0.0)  # floor(470 * 0.65)
    assert letterbox_geometry(1, 10_000, centred)[1:3] == (1, 416)  # never a zero-sized resize


def test_buffer_reuse_across_sizes_rewrites_padding() -> None:
    spec = SPECS["ultralytics"]
    pre = CpuPreprocessor(spec)
    out = pre.allocate()
    tall = cv2.resize(_frame(), (300, 900))
    wide = _frame()
    pre.run(tall, out)  # pads left/right
    pre.run(wide, out)  # pads top/bottom: the old left/right padding must be overwritten
    np.testing.assert_allclose(out, reference(wide, spec), atol=1e-4)
    # a buffer full of garbage is fully overwritten too
    out[...] = np.nan
    pre.run(tall, out)
    np.testing.assert_allclose(out, reference(tall, spec), atol=1e-4)


def test_non_contiguous_input_and_bad_arguments() -> None:
    pre = CpuPreprocessor(SPECS["yolox"])
    out = pre.allocate()
    frame = _frame()
    view = frame[:, ::2]  # a strided view, as a crop would be
    pre.run(view, out)
    np.testing.assert_allclose(out, reference(np.ascontiguousarray(view), SPECS["yolox"]), atol=1e-4)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pre.run(frame[:, :, 0], out)
    with pytest.raises(ValueError, match="allocate"):
        pre.run(frame, np.empty((1, 3, 10, 10), np.float32))
    with pytest.raises(ValueError, match="unknown preprocessor kind"):
        make_preprocessor("tpu", SPECS["yolox"])


def test_yolox_tensor_matches_reference_protocol(tmp_path: Path) -> None:
    # shared/docs/reference-measurements.md: floor-sized bilinear resize, top-left, pad 114, BGR 0..255
    frame = _frame()
    pre = CpuPreprocessor(SPECS["yolox"])
    out = pre.allocate()
    pre.run(frame, out)
    canvas = np.full((416, 416, 3), 114, np.uint8)
    canvas[:312, :416] = cv2.resize(frame, (int(640 * 0.65), int(480 * 0.65)))
    assert np.array_equal(out[0], canvas.transpose(2, 0, 1).astype(np.float32))
