"""Small real ONNX models that compute something from their input, for driving the TensorRT backend
through the double: batch-dependent outputs, Q/DQ nodes, an output without a batch axis, a
data-dependent output shape. (tests/support/onnx_graphs.py has the constant-output ones.)"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(path: Path, nodes: List[onnx.NodeProto], inputs: list, outputs: list, inits: list = ()) -> Path:  # type: ignore[assignment,type-arg]
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(inits))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgedet-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pooled_model(path: Path, batch: Optional[int] = None, size: int = 32, qdq: bool = False) -> Path:
    """images [N, 3, size, size] -> output [N, 3]: the mean of each channel (N dynamic when batch is None)."""
    n = batch if batch is not None else "N"
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, 3, size, size])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, 3])
    nodes, inits, source = [], [], "images"
    if qdq:
        inits = [
            numpy_helper.from_array(np.array(2.0, np.float32), "qs"),
            numpy_helper.from_array(np.array(0, np.uint8), "qz"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["images", "qs", "qz"], ["q"], name="/input/QuantizeLinear"),
            helper.make_node("DequantizeLinear", ["q", "qs", "qz"], ["dq"], name="/input/DequantizeLinear"),
        ]
        source = "dq"
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pooled"], name="/head/pool"),
        helper.make_node("Flatten", ["pooled"], ["output"], name="/head/flatten", axis=1),
    ]
    return _save(path, nodes, [images], [output], inits)


def nonzero_model(path: Path) -> Path:
    """images [1, 3, 8, 8] -> output [1, K]: a data-dependent shape (NonZero)."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    output = helper.make_tensor_value_info("output", TensorProto.INT64, [4, "K"])
    nodes = [helper.make_node("NonZero", ["images"], ["output"], name="/nonzero")]
    return _save(path, nodes, [images], [output])


def broken_model(path: Path) -> Path:
    """Declares images -> output like the demo model, but its only node reads a tensor nobody makes."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["output"])], "broken", [images], [output]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def dynamic_batch_yolox(source: Path, path: Path) -> Path:
    """The demo YOLOX-Nano with a dynamic batch axis: its three head Reshapes hard-code batch 1
    ([1, 85, -1]); 0 copies the batch from their input instead. Same weights, same outputs per image."""
    model = onnx.load(str(source))
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in constants:
            shape = numpy_helper.to_array(constants[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0
                constants[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del model.graph.value_info[:]  # shapes inferred for batch 1 would contradict the new axis
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
