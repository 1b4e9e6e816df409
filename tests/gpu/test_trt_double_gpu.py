"""The real TensorRT backend on a real GPU through the TensorRT double: the double reads its inputs from
and writes its outputs to device memory (DeviceMemory, after synchronizing the stream TensorRT was
given), fed by the CUDA preprocessing kernel. Runs on the lent GPU machine (tools/gpu_device_check.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

from edgedet.assets import ASSETS_DIR as ASSETS
from edgedet.backends.config import TensorRTBackend
from edgedet.backends.onnxruntime import OnnxRuntimeBackend
from edgedet.backends.tensorrt import open_tensorrt_backend
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.preprocess.cuda import CudaPreprocessor
from edgedet.types import InputSpec
from tests.support.fake_tensorrt import DeviceMemory, install
from tests.support.fake_tensorrt.models import dynamic_batch_yolox

SPEC = InputSpec(name="images", width=416, height=416)

pytestmark = pytest.mark.gpu
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_device_tensors_of_two_cameras_through_the_double(
    cuda_runtime: Any, demo_frames: List[np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = install(monkeypatch, "10.3.0", runtime=cuda_runtime, memory=DeviceMemory())
    model = dynamic_batch_yolox(ASSETS / "yolox_nano.onnx", tmp_path / "yolox_nano_dyn.onnx")
    cfg = TensorRTBackend(type="tensorrt", precision="fp16", max_batch=2, slots=2)
    backend = open_tensorrt_backend(cfg, model, tmp_path / "state", input_spec=SPEC)
    gpu = CudaPreprocessor(SPEC, runtime=cuda_runtime)
    cpu = CpuPreprocessor(SPEC)
    reference = OnnxRuntimeBackend(model, threads=4)
    try:
        tensors = [gpu.allocate() for _ in range(4)]
        for i in range(0, 8, 2):
            pair = tensors[(i // 2) % 2 * 2 : (i // 2) % 2 * 2 + 2]
            for t, frame in zip(pair, demo_frames[i : i + 2]):
                gpu.run(frame, t)
            out = backend.collect(backend.submit({"images": pair}, wait=None))
            host = [cpu.allocate() for _ in range(2)]
            for h, frame in zip(host, demo_frames[i : i + 2]):
                cpu.run(frame, h)
            ref = reference.infer({"images": np.concatenate([np.asarray(h) for h in host])})
            np.testing.assert_allclose(out["output"], ref["output"], rtol=1e-4, atol=1e-3)
        assert fake.world.executions == 4
        assert backend.last_timings["infer_ms"] >= 0.0
    finally:
        gpu.close()
        backend.close()
        reference.close()
