"""The CUDA kernel's arithmetic, checked on the CPU (no GPU needed): the resize tables reproduce
cv2.resize(INTER_LINEAR) bit for bit, and a numpy model of the whole kernel equals CpuPreprocessor.
The same kernel runs on the GPU in tests/gpu/test_cuda_preprocess.py."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from edgedet.preprocess.base import letterbox_geometry
from edgedet.preprocess.cpu import CpuPreprocessor, channel_affine
from edgedet.preprocess.resize_tables import linear_table, packed_table, resize_like_kernel
from edgedet.types import ChannelOrder, InputSpec

cv2 = pytest.importorskip("cv2")
CLIP = Path(__file__).resolve().parent.parent / "edgedet" / "assets" / "demo_street.mp4"


@pytest.fixture(scope="module")
def frames() -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    out = []
    for _ in range(3):
        ok, frame = cap.read()
        assert ok, "the demo clip must decode"
        out.append(frame)
    cap.release()
    return out


def kernel_model(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """What cuda_kernel.py computes, in numpy: resize (OpenCV fixed point), padding, channel order,
    float32 multiply then add, rounding to the output dtype."""
    h, w = image.shape[:2]
    _, new_w, new_h, pad_x, pad_y = letterbox_geometry(w, h, spec)
    a, b = channel_affine(spec)
    pad = np.float32(spec.pad_value) * a + b
    out = np.empty((1, 3, spec.height, spec.width), dtype=np.float32)
    out[0] = pad.reshape(3, 1, 1)
    resized = resize_like_kernel(image, new_w, new_h).astype(np.float32)
    if spec.channel_order == ChannelOrder.RGB:
        resized = resized[:, :, ::-1]
    x0, y0 = int(pad_x), int(pad_y)
    for c in range(3):
        v = np.multiply(resized[:, :, c], a[c], dtype=np.float32)
        out[0, c, y0 : y0 + new_h, x0 : x0 + new_w] = np.add(v, b[c], dtype=np.float32)
    return out.astype(spec.dtype)


@pytest.mark.parametrize("source", [(640, 480), (1280, 720), (1920, 1080), (1917, 1079), (768, 576)])
@pytest.mark.parametrize("target", [(320, 320), (416, 416), (640, 640), (640, 384), (300, 700)])
def test_resize_tables_equal_opencv(frames: List[np.ndarray], source: tuple, target: tuple) -> None:
    w, h = source
    scale = min(target[0] / w, target[1] / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    real = cv2.resize(frames[0], (w, h), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(w + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for image in (real, noise):
        expected = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        got = resize_like_kernel(image, new_w, new_h)
        assert np.array_equal(got, expected), f"max diff {np.abs(got.astype(int) - expected).max()}"


def test_upscale_and_identity(frames: List[np.ndarray]) -> None:
    image = frames[1]
    for new_w, new_h in ((640, 480), (1000, 900), (641, 479), (2, 2)):
        expected = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize_like_kernel(image, new_w, new_h), expected)


def test_table_layout() -> None:
    s, w0, w1 = linear_table(1920, 640)
    assert s.dtype == np.int32 and len(s) == 640
    assert (s[0], w0[0], w1[0]) == (1, 2048, 0)  # 3x down: output 0 sits exactly on source pixel 1
    s2, a0, a1 = linear_table(1280, 640)
    assert (s2[0], a0[0], a1[0]) == (0, 1024, 1024)  # 2x down: halfway between pixels 0 and 1
    assert np.all(w0 + w1 == 2048)
    # upscaling rows keep their raw index and weights (OpenCV clips the rows when reading)
    rows, _, b1 = linear_table(480, 900, clamp=False)
    cols, c0, c1 = linear_table(480, 900, clamp=True)
    assert rows[0] == -1 and b1[0] > 0
    assert cols[0] == 0 and (c0[0], c1[0]) == (2048, 0)
    packed = packed_table(1920, 640)
    assert packed.shape == (640, 2)
    assert np.array_equal(packed[:, 0], s)
    assert np.array_equal(packed[:, 1] & 0xFFFF, w0) and np.array_equal(packed[:, 1] >> 16, w1)
    with pytest.raises(ValueError):
        linear_table(0, 10)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("normalise", [False, True])
def test_kernel_model_equals_cpu_preprocessor(
    frames: List[np.ndarray], dtype: str, order: str, center: bool, normalise: bool
) -> None:
    spec = InputSpec(
        name="images", width=640, height=384, channel_order=ChannelOrder(order),
        scale=1 / 255 if (normalise or order == "rgb") else 1.0, center=center, dtype=dtype,
        mean=(0.485, 0.456, 0.406) if normalise else (0.0, 0.0, 0.0),
        std=(0.229, 0.224, 0.225) if normalise else (1.0, 1.0, 1.0),
    )  # fmt: skip
    image = cv2.resize(frames[2], (1917, 1079), interpolation=cv2.INTER_CUBIC)
    cpu = CpuPreprocessor(spec)
    expected = cpu.allocate()
    cpu.run(image, expected)
    got = kernel_model(image, spec)
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected)


def test_cuda_preprocessor_without_pycuda_names_the_extra() -> None:
    try:
        import pycuda.driver  # noqa: F401

        pytest.skip("pycuda is installed here")
    except ImportError:
        pass
    from edgedet.errors import DependencyError
    from edgedet.preprocess.cuda import CudaPreprocessor

    spec = InputSpec(name="images", width=416, height=416)
    with pytest.raises(DependencyError, match=r"edgedet\[jetson\]"):
        CudaPreprocessor(spec)


def test_unknown_cuda_implementation() -> None:
    from edgedet.cudart import open_runtime

    with pytest.raises(ValueError, match=r"pycuda"):
        open_runtime(0, impl="cupy")
