"""The ONNX Runtime backend with the real model, small real graphs, and every bad model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.backends import open_backend
from edgedet.backends.config import OnnxRuntimeBackend as OrtConfig
from edgedet.backends.onnxruntime import OnnxRuntimeBackend, graph_has_quantization
from edgedet.errors import BackendError, EdgedetError, ModelError
from edgedet.types import TensorSpec
from tests.support import onnx_graphs as g


def test_real_model_specs_and_inference(tmp_path: Path) -> None:
    backend = open_backend(OrtConfig(type="onnxruntime", threads=2), DEMO_MODEL, tmp_path)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.name == "onnxruntime" and backend.precision == "fp32"
    assert list(backend.inputs) == [TensorSpec("images", (1, 3, 416, 416), "float32")]
    assert list(backend.outputs) == [TensorSpec("output", (1, 3549, 85), "float32")]
    assert dict(backend.metadata) == {}
    out = backend.infer({"images": np.full((1, 3, 416, 416), 114.0, np.float32)})
    assert list(out) == ["output"] and out["output"].shape == (1, 3549, 85)
    # objectness and class scores are probabilities
    assert out["output"][..., 4:].min() >= 0.0 and out["output"][..., 4:].max() <= 1.0
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer({"images": np.zeros((1, 3, 416, 416), np.float32)})


def test_wrong_input_is_a_one_line_backend_error() -> None:
    backend = OnnxRuntimeBackend(DEMO_MODEL, threads=1)
    with pytest.raises(BackendError) as err:
        backend.infer({"images": np.zeros((1, 3, 320, 320), np.float32)})
    message = str(err.value)
    assert message.startswith("ONNX Runtime inference failed: Got invalid dimensions for input: images")
    assert "\n" not in message and "[ONNXRuntimeError]" not in message


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(missing)
    assert str(err.value) == f"model file not found: {missing}"


@pytest.mark.parametrize(
    "content, kind",
    [
        (np.random.default_rng(1).bytes(4096), "random bytes"),
        (b"", "empty"),
        (b"name: not a model\n", "text"),
        (None, "a video"),
        (None, "truncated model"),
    ],
)
def test_corrupt_model_files(tmp_path: Path, content: bytes | None, kind: str) -> None:
    path = tmp_path / "model.onnx"
    if kind == "a video":
        path.write_bytes(DEMO_CLIP.read_bytes())
    elif kind == "truncated model":
        path.write_bytes(DEMO_MODEL.read_bytes()[:500_000])
    else:
        path.write_bytes(content or b"")
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    if kind == "empty":
        assert message == f"model file is empty: {path}"
    else:
        assert message == f"{path} is not an ONNX model (corrupt, truncated or another format)"


def test_directory_and_unknown_provider(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        OnnxRuntimeBackend(tmp_path)
    with pytest.raises(BackendError, match=r"provider\(s\) NoSuchExecutionProvider not available"):
        OnnxRuntimeBackend(DEMO_MODEL, providers=["NoSuchExecutionProvider"])
    assert issubclass(ModelError, EdgedetError) and issubclass(BackendError, EdgedetError)


def test_precision_from_the_graph(tmp_path: Path) -> None:
    outputs = {"output0": np.zeros((1, 100, 8), np.float32)}
    fp16 = g.save_constant_model(tmp_path / "fp16.onnx", outputs, input_dtype=np.float16)
    backend = OnnxRuntimeBackend(fp16)
    assert backend.precision == "fp16" and backend.inputs[0].dtype == "float16"
    qdq = [
        helper.make_node("QuantizeLinear", ["images", "qs", "qz"], ["q"]),
        helper.make_node(
            "Constant", [], ["qs"], value=helper.make_tensor("qs_v", TensorProto.FLOAT, [], [0.1])
        ),
        helper.make_node("Constant", [], ["qz"], value=helper.make_tensor("qz_v", TensorProto.INT8, [], [0])),
    ]
    # put the Constant nodes first: ONNX wants a topologically sorted graph
    int8 = g.save_constant_model(tmp_path / "int8.onnx", outputs, extra_nodes=[qdq[1], qdq[2], qdq[0]])
    assert graph_has_quantization(int8) and not graph_has_quantization(DEMO_MODEL)
    assert OnnxRuntimeBackend(int8).precision == "int8"


def test_metadata_and_dynamic_dims(tmp_path: Path) -> None:
    model = g.save_constant_model(
        tmp_path / "m.onnx",
        {"output0": np.zeros((1, 84, 8400), np.float32)},
        input_shape=(None, 3, None, None),
        metadata={"names": "{0: 'person'}", "imgsz": "[640, 640]"},
    )
    backend = OnnxRuntimeBackend(model, threads=1)
    assert backend.inputs[0].shape == (None, 3, None, None)
    assert backend.metadata["names"] == "{0: 'person'}" and backend.metadata["imgsz"] == "[640, 640]"
