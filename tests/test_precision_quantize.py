"""INT8 Q/DQ quantization of the real YOLOX-Nano: TensorRT-style placement, zero points, per-channel
weight scales, float layers, QAT pass-through, and the range methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.backends.tensorrt.layers import load_layer_list
from edgedet.precision import quantize as q
from edgedet.precision.calibration import CalibrationSet, load_calibration
from edgedet.precision.errors import PrecisionError
from edgedet.precision.ranges import METHODS, RangeTable
from edgedet.precision.sensitivity import output_error


@pytest.fixture(scope="module")
def calib() -> CalibrationSet:
    return load_calibration(DEMO_CLIP, DEMO_MODEL, limit=4)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quant")


@pytest.fixture(scope="module")
def int8(calib: CalibrationSet, workdir: Path) -> q.QuantizeResult:
    return q.quantize(DEMO_MODEL, calib, workdir / "int8.onnx", "minmax", ranges_path=workdir / "ranges.json")


def _inits(model: Any) -> Dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_qdq_graph_is_tensorrt_style(int8: q.QuantizeResult) -> None:
    model = onnx.load(str(int8.path))
    onnx.checker.check_model(model)
    assert q.opset(model) >= 13  # converted from opset 11: per-channel DequantizeLinear needs 13
    inits = _inits(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point must be int8 0"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 113 and int8.quantized_layers == 113 and int8.int8_mac_share == 1.0
    for conv in convs:
        act, weight = producer[conv.input[0]], producer[conv.input[1]]
        assert act.op_type == "DequantizeLinear" and weight.op_type == "DequantizeLinear"
        assert inits[act.input[1]].size == 1  # per-tensor activation scale
        # per-channel weight scale: one per output channel, along axis 0; the weight stays a float
        # initializer behind a Q/DQ pair (TensorRT 8.x rejects DequantizeLinear on int8 constants)
        wq = producer[weight.input[0]]
        assert wq.op_type == "QuantizeLinear"
        w = inits[wq.input[0]]
        assert w.dtype == np.float32
        assert inits[weight.input[1]].shape == (w.shape[0],)
        axis = [a.i for a in weight.attribute if a.name == "axis"]
        assert axis in ([], [0])
        # bias stays float; nothing quantizes the Conv output
        if len(conv.input) > 2:
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
        consumers = [n.op_type for n in model.graph.node if conv.output[0] in n.input]
        assert "QuantizeLinear" not in consumers


def test_int8_model_runs_and_stays_close_to_fp32(int8: q.QuantizeResult, calib: CalibrationSet) -> None:
    fp32 = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(str(int8.path), providers=["CPUExecutionProvider"])
    feed = next(calib.feeds())
    a, b = fp32.run(None, feed)[0], qdq.run(None, feed)[0]
    assert a.shape == b.shape == (1, 3549, 85)
    assert not np.array_equal(a, b)  # it really is quantized
    assert np.isfinite(b).all()


def test_float_layers_are_left_unquantized(
    calib: CalibrationSet, int8: q.QuantizeResult, workdir: Path
) -> None:
    # ranges come from the saved statistics file: no second calibration pass
    res = q.quantize(
        DEMO_MODEL,
        None,
        workdir / "mixed.onnx",
        "mse",
        float_layers=["Conv_44"],
        ranges_path=workdir / "ranges.json",
    )
    model = onnx.load(str(res.path))
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == "Conv_44")
    assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in conv.input)
    assert res.float_layers == ["Conv_44"] and 0.99 < res.int8_mac_share < 1.0
    assert res.quantized_layers == 112
    # that depthwise conv is what breaks naive INT8 on this model: in float, outputs get much closer
    feed = next(calib.feeds())
    ref = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"]).run(None, feed)
    naive = ort.InferenceSession(str(int8.path), providers=["CPUExecutionProvider"]).run(None, feed)
    mixed = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"]).run(None, feed)
    assert output_error(ref, mixed) < 0.5 * output_error(ref, naive)


def test_strip_layers_matches_a_fresh_build(calib: CalibrationSet, workdir: Path) -> None:
    model = q.load_model(DEMO_MODEL)
    prepared = q.prepare(model)
    table = RangeTable.load(workdir / "ranges.json") if (workdir / "ranges.json").exists() else None
    assert table is not None
    ranges = table.ranges("minmax")
    full = q.build_qdq(prepared, ranges)
    stripped = q.strip_layers(full, {"Conv_44", "Conv_47"})
    fresh = q.build_qdq(prepared, ranges, exclude=["Conv_44", "Conv_47"])
    feed = next(calib.feeds())
    a = ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feed
    )[0]
    b = ort.InferenceSession(fresh.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    q_count, dq_count = q.summarize_qdq(stripped)
    assert (q_count, dq_count) == q.summarize_qdq(fresh)
    with pytest.raises(PrecisionError, match="no such layer"):
        q.strip_layers(full, {"Conv_nope"})


def test_qat_models_pass_through_unchanged(int8: q.QuantizeResult, workdir: Path) -> None:
    res = q.quantize(int8.path, None, workdir / "again.onnx")
    assert res.skipped and "already holds" in res.message
    assert (workdir / "again.onnx").read_bytes() == int8.path.read_bytes()


def test_macs_from_shape_inference() -> None:
    model = q.load_model(DEMO_MODEL)
    layers = q.conv_layers(q.prepare(model), model)
    by = {c.name: c for c in layers}
    assert by["Conv_41"].macs == 16 * 208 * 208 * 12 * 9  # the Focus stem conv
    assert by["Conv_44"].depthwise and by["Conv_44"].macs == 16 * 104 * 104 * 9
    assert 520e6 < sum(c.macs for c in layers) < 525e6  # YOLOX-Nano at 416: ~0.52 GMAC


def test_range_methods(workdir: Path) -> None:
    table = RangeTable.load(workdir / "ranges.json")
    assert table.images == 4 and len(table.amax) == 97
    got = {m: table.ranges(m) for m in METHODS if m != "entropy"}
    few = sorted(table.amax)[:6]  # entropy is the slow one (a KL scan per tensor)
    got["entropy"] = RangeTable(
        "", 1, {n: table.amax[n] for n in few}, {n: table.hist[n] for n in few}
    ).ranges("entropy")
    for name, amax in table.amax.items():
        assert got["minmax"][name] == amax
        for m in ("percentile", "mse", "entropy"):
            if name in got[m]:
                assert 0 < got[m][name] <= amax * 1.001, (m, name)
    # clipping methods clip the long-tailed SiLU outputs well below their maximum
    assert np.median([got["mse"][n] / table.amax[n] for n in table.amax]) < 0.9
    with pytest.raises(PrecisionError, match="unknown calibration method"):
        table.ranges("kl")


def test_thresholds_on_known_distributions() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(0, 1, 200_000))
    x[:3] = 40.0  # three outliers set max|x|
    hist = np.bincount(np.minimum((x * 2048 / 40.0).astype(int), 2047), minlength=2048)
    table = RangeTable("", 1, {"t": 40.0}, {"t": hist})
    assert table.ranges("minmax")["t"] == 40.0
    # the Gaussian bulk sits below ~4.5: entropy and percentile ignore the three outliers; MSE weighs
    # their squared clipping error against rounding error and clips only part of the way
    for m in ("entropy", "percentile"):
        assert 2.0 < table.ranges(m)["t"] < 8.0, m
    assert 4.0 < table.ranges("mse")["t"] < 35.0


def test_float_layer_list_is_read_by_the_engine_builder(workdir: Path) -> None:
    path = q.write_float_layers(workdir / "layers.json", ["Conv_44", "Conv_70"], "abc", method="mse")
    assert load_layer_list(path) == {"Conv_44": None, "Conv_70": None}
    assert q.read_float_layers(path) == ["Conv_44", "Conv_70"]


def test_unknown_float_layer(calib: CalibrationSet, workdir: Path) -> None:
    with pytest.raises(PrecisionError, match="not among the model's Conv layers: Conv_999"):
        q.quantize(
            DEMO_MODEL,
            calib,
            workdir / "x.onnx",
            float_layers=["Conv_999"],
            ranges_path=workdir / "ranges.json",
        )


def test_not_a_model(tmp_path: Path, calib: CalibrationSet) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not protobuf at all")
    from edgedet.errors import ModelError

    with pytest.raises(ModelError):
        q.quantize(bad, calib, tmp_path / "out.onnx")
