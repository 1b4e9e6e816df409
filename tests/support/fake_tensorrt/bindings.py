"""The TensorRT Python API subset edgedet uses, with the rules the real bindings enforce.

Each rule cites where the real bindings (github.com/NVIDIA/TensorRT, release branches 8.5, 10.x, 11.x)
or the library behind them decide it:

* pyCore.cpp ``bindCore``: ``ILogger``, ``IProgressMonitor`` are pybind11 trampolines, so a Python
  subclass that overrides ``__init__`` without calling the base one is a TypeError when TensorRT gets it.
* pyInt8.cpp ``pyCalibratorTrampoline::getBatch``: the result of ``get_batch`` is cast to
  ``std::vector<size_t>`` (device pointers, one per input); None or an empty list ends calibration.
  ``readCalibrationCache``: None or a buffer (bytes). ``writeCalibrationCache`` receives a memoryview.
* pyCore.cpp ``lambdas::execute_async_v3`` returns ``enqueueV3``'s bool; ``lambdas::set_tensor_address``
  likewise; enqueueV3 fails (logs, returns False) when an I/O tensor has no address or an input shape
  is unspecified.
* pyCore.cpp ``lambdas::context_set_optimization_profile_async``: ``PY_ASSERT_RUNTIME_ERROR`` (10.x,
  11.x) / ``throw std::runtime_error`` (8.5): it raises RuntimeError, never returns False. A profile
  must not be shared by execution contexts that run at the same time.
* pyCore.cpp ``Runtime.deserialize_cuda_engine``: None (with an error logged) for a plan from another
  TensorRT version or GPU; the double's plan carries the version and device it was built for.
* pyCore.cpp ``Builder.build_serialized_network``: None on failure (errors go to the logger).
* pyOnnx.cpp (python/src/parsers) ``OnnxParser.parse_from_file``: False for a bad model, with
  ``num_errors``/``get_error(i)``; the 8.x parser needs an explicit-batch network.
* pyGraph.cpp / pyFoundationalTypes.cpp: ``INetworkDefinition.get_input``/``get_layer``, ``ILayer``
  precision and ``set_output_type``, ``Dims`` (indexable, -1 for a dynamic axis), ``DataType``.
* Version lines (NvInfer.h of each branch): ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` exists in
  8.5 and 10 (deprecated, ignored in 10), not in 11; 11 networks are strongly typed and have no
  ``BuilderFlag.FP16``/``INT8``, no calibrators, no ``int8_calibrator``/``set_calibration_profile``;
  ``IProgressMonitor`` exists from 10.0; the DLA exists on 11 only from 11.4.

Execution computes real outputs: the plan holds the ONNX model, run with ONNX Runtime on inputs read
from the addresses given with ``set_tensor_address`` and written back to the output addresses
(memory.py: host memory in CI, device memory on the GPU machine). Reduced precision is not emulated:
an FP16/INT8 "engine" computes in the ONNX model's own types.
"""

from __future__ import annotations

import enum
import json
import struct
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"FTRT"
TIMING_MAGIC = b"FTC1"
CALIB_MAGIC = b"FAKE-TRT-CALIBRATION-1\n"


@dataclass
class FakeDevice:
    """The GPU the double pretends to run on."""

    name: str = "Orin"
    compute_capability: Tuple[int, int] = (8, 7)
    dla_cores: int = 2


@dataclass
class World:
    """The double's state: version, device, where addresses point, and what happened (for tests)."""

    version: str
    device: FakeDevice
    memory: Any
    builds: List[Dict[str, Any]] = field(default_factory=list)  # one record per successful build
    executions: int = 0
    calibration_reads: List[Tuple[float, float, float]] = field(default_factory=list)  # min, max, mean

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])


WORLD: Optional[World] = None


def world() -> World:
    if WORLD is None:
        raise RuntimeError("the TensorRT double is not installed")
    return WORLD


def _require_init(obj: object, base: str) -> None:
    """pybind11: a trampoline whose base __init__ was not called cannot be handed to C++."""
    if not getattr(obj, "_fake_base_init", False):
        raise TypeError(f"{type(obj).__name__}.__init__() must be called when overriding __init__ ({base})")


# -- enums (members per version) -----------------------------------------------------------------
class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


_NUMPY_OF = {
    DataType.FLOAT: "float32", DataType.HALF: "float16", DataType.INT8: "int8", DataType.INT32: "int32",
    DataType.BOOL: "bool", DataType.UINT8: "uint8", DataType.INT64: "int64",
}  # fmt: skip
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL,
               2: DataType.UINT8, 7: DataType.INT64}  # fmt: skip


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    ACTIVATION = 1
    POOLING = 2
    ELEMENTWISE = 3
    CONCATENATION = 4
    SHUFFLE = 5
    SLICE = 6
    RESIZE = 7
    SHAPE = 8
    GATHER = 9
    CONSTANT = 10
    QUANTIZE = 11
    DEQUANTIZE = 12
    UNARY = 13
    REDUCE = 14
    SOFTMAX = 15
    MATRIX_MULTIPLY = 16


_LAYER_OF_OP = {
    "Conv": LayerType.CONVOLUTION, "Relu": LayerType.ACTIVATION, "Sigmoid": LayerType.ACTIVATION,
    "LeakyRelu": LayerType.ACTIVATION, "MaxPool": LayerType.POOLING, "Add": LayerType.ELEMENTWISE,
    "Mul": LayerType.ELEMENTWISE, "Sub": LayerType.ELEMENTWISE, "Div": LayerType.ELEMENTWISE,
    "Concat": LayerType.CONCATENATION, "Reshape": LayerType.SHUFFLE, "Transpose": LayerType.SHUFFLE,
    "Slice": LayerType.SLICE, "Resize": LayerType.RESIZE, "Shape": LayerType.SHAPE,
    "Gather": LayerType.GATHER, "Constant": LayerType.CONSTANT, "QuantizeLinear": LayerType.QUANTIZE,
    "DequantizeLinear": LayerType.DEQUANTIZE, "Exp": LayerType.UNARY, "Softmax": LayerType.SOFTMAX,
    "MatMul": LayerType.MATRIX_MULTIPLY, "ReduceMax": LayerType.REDUCE,
}  # fmt: skip
_NOT_ON_DLA = {LayerType.SHAPE, LayerType.GATHER, LayerType.RESIZE, LayerType.SLICE, LayerType.CONSTANT}


def _creation_flags(major: int) -> type:
    members = {"STRONGLY_TYPED": 1} if major >= 10 else {}
    if major < 11:
        members["EXPLICIT_BATCH"] = 0
    return enum.IntEnum("NetworkDefinitionCreationFlag", members)  # type: ignore[return-value]


def _builder_flags(major: int) -> type:
    members = {"GPU_FALLBACK": 3, "OBEY_PRECISION_CONSTRAINTS": 10, "PREFER_PRECISION_CONSTRAINTS": 11}
    if major < 11:  # strongly typed TensorRT 11 has no precision flags
        members.update({"FP16": 0, "INT8": 1})
    return enum.IntEnum("BuilderFlag", members)  # type: ignore[return-value]


class Dims(tuple):  # type: ignore[type-arg]
    """pyFoundationalTypes.cpp: Dims from a list/tuple; len() and indexing; -1 is a dynamic axis."""

    def __new__(cls, shape: Sequence[int] = ()) -> Dims:
        return tuple.__new__(cls, [int(d) for d in shape])


# -- logging and callbacks -----------------------------------------------------------------------
class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        self._fake_base_init = True

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


def _log(logger: Any, severity: Severity, msg: str) -> None:
    _require_init(logger, "ILogger")
    logger.log(severity, msg)


class IProgressMonitor:
    def __init__(self) -> None:
        self._fake_base_init = True


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        self._fake_base_init = True


# -- network ---------------------------------------------------------------------------------------
class ITensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype


class ILayer:
    def __init__(self, name: str, type_: LayerType, outputs: List[ITensor]) -> None:
        self.name = name
        self.type = type_
        self._outputs = outputs
        self._precision: Optional[DataType] = None
        self.output_types: Dict[int, DataType] = {}

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    @property
    def precision(self) -> Optional[DataType]:
        return self._precision

    @precision.setter
    def precision(self, dtype: DataType) -> None:
        self._precision = DataType(dtype)

    def set_output_type(self, index: int, dtype: DataType) -> None:
        if not 0 <= index < len(self._outputs):
            raise IndexError(index)
        self.output_types[index] = DataType(dtype)


class INetworkDefinition:
    def __init__(self, explicit_batch: bool) -> None:
        self.explicit_batch = explicit_batch
        self._inputs: List[ITensor] = []
        self._outputs: List[ITensor] = []
        self._layers: List[ILayer] = []
        self.onnx: bytes = b""
        self.dim_params: Dict[str, List[Optional[str]]] = {}  # tensor -> dim_param per axis

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> ILayer:
        return self._layers[index]


class IParserError:
    def __init__(self, desc: str) -> None:
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return f"In node -1 (parseGraph): INVALID_GRAPH: {self._desc}"


class OnnxParser:
    """pyOnnx.cpp: parse_from_file -> bool; errors through num_errors/get_error."""

    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        _require_init(logger, "ILogger")
        self._network = network
        self._logger = logger
        self._errors: List[IParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> IParserError:
        return self._errors[index]

    def _fail(self, desc: str) -> bool:
        self._errors.append(IParserError(desc))
        _log(self._logger, Severity.ERROR, f"ModelImporter: {desc}")
        return False

    def parse_from_file(self, model: str) -> bool:
        import onnx

        if not self._network.explicit_batch:
            return self._fail("the ONNX parser only supports networks with an explicit batch dimension")
        try:
            with open(model, "rb") as fh:
                data = fh.read()
            proto = onnx.load_model_from_string(data)
            onnx.checker.check_model(proto)
        except FileNotFoundError:
            return self._fail(f"failed to open file {model}")
        except Exception as exc:  # DecodeError, ValidationError
            return self._fail(f"failed to parse ONNX model from file {model}: {exc}")
        weights = {t.name for t in proto.graph.initializer}
        net = self._network
        for value in proto.graph.input:
            if value.name in weights:
                continue
            net._inputs.append(_tensor_of(value, net))
        for value in proto.graph.output:
            net._outputs.append(_tensor_of(value, net))
        for i, node in enumerate(proto.graph.node):
            outputs = [ITensor(name, (), DataType.FLOAT) for name in node.output]
            net._layers.append(
                ILayer(node.name or f"node_{i}", _LAYER_OF_OP.get(node.op_type, LayerType.UNARY), outputs)
            )
        net.onnx = data
        return True


def _tensor_of(value: Any, net: INetworkDefinition) -> ITensor:
    tensor_type = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    net.dim_params[value.name] = [
        d.dim_param if d.HasField("dim_param") else None for d in tensor_type.shape.dim
    ]
    return ITensor(value.name, dims, _ONNX_TYPES.get(tensor_type.elem_type, DataType.FLOAT))


# -- builder ---------------------------------------------------------------------------------------
class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: Dict[str, Tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:
        self.shapes[input] = (Dims(min), Dims(opt), Dims(max))

    def get_shape(self, input: str) -> List[Dims]:
        return list(self.shapes.get(input, ()))


class ITimingCache:
    def __init__(self, version: str, device: str, entries: Sequence[str]) -> None:
        self.version = version
        self.device = device
        self.entries = set(entries)

    def serialize(self) -> IHostMemory:
        body = json.dumps({"version": self.version, "device": self.device, "entries": sorted(self.entries)})
        return IHostMemory(TIMING_MAGIC + body.encode())


class IHostMemory:
    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def __bytes__(self) -> bytes:
        return self._data

    @property
    def nbytes(self) -> int:
        return len(self._data)


def _device_id() -> str:
    dev = world().device
    return f"{dev.name}/sm{dev.compute_capability[0]}{dev.compute_capability[1]}"


class IBuilderConfig:
    """The TensorRT 11 builder config (strongly typed: no calibrator); WeakBuilderConfig adds it."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.flags: set = set()
        self.pools: Dict[int, int] = {}
        self.profiles: List[IOptimizationProfile] = []
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.timing_cache: Optional[ITimingCache] = None
        self._monitor: Optional[Any] = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if pool_size < 0:
            raise ValueError("pool size must be >= 0")
        self.pools[int(pool)] = int(pool_size)

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        for name, (lo, opt, hi) in profile.shapes.items():
            if not (len(lo) == len(opt) == len(hi)) or any(
                not (a <= b <= c) or a < 0 for a, b, c in zip(lo, opt, hi)
            ):
                _log(self._logger, Severity.ERROR, f"profile for {name}: min <= opt <= max violated")
                return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def can_run_on_DLA(self, layer: ILayer) -> bool:
        return layer.type not in _NOT_ON_DLA

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[ITimingCache]:
        blob = bytes(serialized_timing_cache)
        if not blob:
            return ITimingCache(world().version, _device_id(), ())
        if not blob.startswith(TIMING_MAGIC):
            _log(self._logger, Severity.ERROR, "createTimingCache: the timing cache blob is corrupt")
            return None
        data = json.loads(blob[len(TIMING_MAGIC) :])
        return ITimingCache(data["version"], data["device"], data["entries"])

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if (cache.version, cache.device) != (world().version, _device_id()) and not ignore_mismatch:
            _log(self._logger, Severity.ERROR, "the timing cache was made by another TensorRT or device")
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> Optional[ITimingCache]:
        return self.timing_cache

    @property
    def progress_monitor(self) -> Optional[Any]:
        if world().major < 10:
            raise AttributeError("'IBuilderConfig' object has no attribute 'progress_monitor'")
        return self._monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor: Any) -> None:
        if world().major < 10:
            raise AttributeError("'IBuilderConfig' object has no attribute 'progress_monitor'")
        _require_init(monitor, "IProgressMonitor")
        self._monitor = monitor


class WeakBuilderConfig(IBuilderConfig):
    """TensorRT 8.5-10: plus the INT8 calibrator and its profile."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self._calibrator: Optional[Any] = None
        self.calibration_profile: Optional[IOptimizationProfile] = None

    @property
    def int8_calibrator(self) -> Optional[Any]:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: Any) -> None:
        _require_init(calibrator, "IInt8EntropyCalibrator2")
        self._calibrator = calibrator

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        self.calibration_profile = profile
        return True


class Builder:
    def __init__(self, logger: Any) -> None:
        _require_init(logger, "ILogger")
        self._logger = logger

    @property
    def num_DLA_cores(self) -> int:
        w = world()
        if w.major == 11 and w.minor < 4:
            return 0
        return w.device.dla_cores

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        w = world()
        explicit = w.major >= 10 or bool(int(flags) & 1)  # EXPLICIT_BATCH is bit 0 until 10, then default
        return INetworkDefinition(explicit)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._logger) if world().major >= 11 else WeakBuilderConfig(self._logger)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _error(self, msg: str) -> None:
        _log(self._logger, Severity.ERROR, msg)

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> Optional[IHostMemory]:
        w = world()
        if not network.onnx:
            self._error("the network is empty (was the ONNX parsed?)")
            return None
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        dynamic = [t for t in inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config.profiles:
            self._error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            return None
        for profile in config.profiles:
            for t in inputs:
                if t.name not in profile.shapes:
                    if t in dynamic:
                        self._error(f"optimization profile is missing values for input {t.name}")
                        return None
                    continue
                for shape in profile.shapes[t.name]:
                    if len(shape) != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, shape)):
                        self._error(
                            f"profile shape {list(shape)} does not match input {t.name} {list(t.shape)}"
                        )
                        return None
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        has_qdq = any(layer.type in (LayerType.QUANTIZE, LayerType.DEQUANTIZE) for layer in layers)
        int8 = "INT8" in config.flags
        calibration: Optional[Dict[str, Any]] = None
        if int8 and not has_qdq:
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is None:
                self._error("INT8 without Q/DQ nodes needs a calibrator (or dynamic ranges for every tensor)")
                return None
            calib_profile = getattr(config, "calibration_profile", None)
            if dynamic and calib_profile is None:
                self._error("calibrating a network with dynamic shapes needs set_calibration_profile")
                return None
            calibration = self._calibrate(calibrator, inputs, calib_profile)
            if calibration is None:
                return None
        if config.default_device_type == DeviceType.DLA:
            if not (0 <= config.DLA_core < self.num_DLA_cores):
                self._error(f"DLA core {config.DLA_core} requested, but this device has {self.num_DLA_cores}")
                return None
            if w.major < 11 and not ({"FP16", "INT8"} & config.flags):
                self._error("DLA layers need FP16 or INT8 precision")
                return None
            off = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
            if off and "GPU_FALLBACK" not in config.flags:
                self._error(f"layer {off[0]} cannot run on the DLA and GPU fallback is not enabled")
                return None
        timing_hits = 0
        if config.timing_cache is not None:
            names = [layer.name for layer in layers]
            timing_hits = sum(1 for n in names if n in config.timing_cache.entries)
            config.timing_cache.entries.update(names)
        monitor = config._monitor
        if monitor is not None:
            monitor.phase_start("Building engine", "", len(layers))
            monitor.phase_start("Tactic selection", "Building engine", len(layers))
            monitor.phase_finish("Tactic selection")
            for step in range(len(layers)):
                if not monitor.step_complete("Building engine", step):
                    self._error("the build was cancelled by the progress monitor")
                    return None
            monitor.phase_finish("Building engine")
        header = {
            "trt_version": w.version,
            "device": _device_id(),
            "dla_core": config.DLA_core if config.default_device_type == DeviceType.DLA else None,
            "profiles": [
                {name: [list(s) for s in shapes] for name, shapes in p.shapes.items()}
                for p in config.profiles
            ],
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype)} for t in inputs],
            "outputs": [
                _output_entry(network, network.get_output(i), inputs) for i in range(network.num_outputs)
            ],
            "flags": sorted(config.flags),
            "explicit_int8": has_qdq,
            "calibration": calibration,
            "layer_precisions": {
                layer.name: int(layer.precision) for layer in layers if layer.precision is not None
            },
        }
        w.builds.append({**header, "timing_hits": timing_hits, "layers": len(layers)})
        blob = json.dumps(header).encode()
        return IHostMemory(MAGIC + struct.pack("<I", len(blob)) + blob + network.onnx)

    def _calibrate(
        self, calibrator: Any, inputs: Sequence[ITensor], profile: Optional[IOptimizationProfile]
    ) -> Optional[Dict[str, Any]]:
        cached = calibrator.read_calibration_cache()
        if cached is not None:
            blob = bytes(memoryview(cached))  # pyInt8.cpp: py::buffer{cacheRaw}
            if blob.startswith(CALIB_MAGIC):
                return {"from_cache": True, **json.loads(blob[len(CALIB_MAGIC) :])}
            _log(self._logger, Severity.WARNING, "calibration cache unusable: calibrating again")
        names = [t.name for t in inputs]
        shapes = {}
        for t in inputs:
            shapes[t.name] = profile.shapes[t.name][1] if profile is not None else t.shape
        lo, hi, total, count, batches = np.inf, -np.inf, 0.0, 0, 0
        while True:
            result = calibrator.get_batch(names)
            if result is None:
                break
            try:
                pointers = [int(p) for p in result]  # std::vector<size_t> cast
                if any(isinstance(p, (float, np.ndarray)) for p in result):
                    raise TypeError("not an int")
            except (TypeError, ValueError):
                self._error(
                    f"get_batch must return a list of device pointers (ints), not {type(result).__name__}"
                )
                return None
            if not pointers:
                break
            if len(pointers) != len(names):
                self._error(f"get_batch returned {len(pointers)} pointers for {len(names)} inputs")
                return None
            for t, ptr in zip(inputs, pointers):
                data = world().memory.read(ptr, shapes[t.name], _NUMPY_OF[t.dtype]).astype(np.float64)
                lo, hi = min(lo, float(data.min())), max(hi, float(data.max()))
                total += float(data.sum())
                count += data.size
            batches += 1
        if batches == 0:
            self._error("calibration failure: get_batch returned no data")
            return None
        stats = {"batches": batches, "min": lo, "max": hi, "mean": total / count}
        world().calibration_reads.append((lo, hi, total / count))
        calibrator.write_calibration_cache(memoryview(CALIB_MAGIC + json.dumps(stats).encode()))
        return {"from_cache": False, **stats}


def _output_entry(network: INetworkDefinition, tensor: ITensor, inputs: Sequence[ITensor]) -> Dict[str, Any]:
    """Output dims: fixed, or tied to an input axis with the same ONNX dim_param (the batch), else -1
    (data-dependent until execution)."""
    params = network.dim_params.get(tensor.name, [])
    dims: List[Any] = []
    for axis, d in enumerate(tensor.shape):
        if d >= 0:
            dims.append(d)
            continue
        param = params[axis] if axis < len(params) else None
        tie = None
        for t in inputs:
            for in_axis, in_param in enumerate(network.dim_params.get(t.name, [])):
                if param is not None and in_param == param:
                    tie = [t.name, in_axis]
        dims.append(tie if tie is not None else -1)
    return {"name": tensor.name, "dims": dims, "dtype": int(tensor.dtype)}


# -- runtime, engine, context --------------------------------------------------------------------
class Runtime:
    def __init__(self, logger: Any) -> None:
        _require_init(logger, "ILogger")
        self._logger = logger
        self.DLA_core = -1

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional[ICudaEngine]:
        w = world()
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC) or len(data) < 8:
            _log(self._logger, Severity.ERROR, "[stdArchiveReader.cpp::StdArchiveReader::32] Serialization "
                 "assertion magicTagRead == kMAGIC_TAG failed")  # fmt: skip
            return None
        (size,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + size])
        if header["trt_version"] != w.version:
            _log(self._logger, Severity.ERROR, "The engine plan file is not compatible with this version "
                 f"of TensorRT, expecting library version {w.version} got {header['trt_version']}, please "
                 "rebuild.")  # fmt: skip
            return None
        if header["device"] != _device_id():
            _log(self._logger, Severity.ERROR, "The engine plan file is generated on an incompatible device, "
                 f"expecting {_device_id()} got {header['device']}, please rebuild.")  # fmt: skip
            return None
        if header["dla_core"] is not None and not (0 <= self.DLA_core < w.device.dla_cores):
            _log(
                self._logger,
                Severity.ERROR,
                f"the engine runs on the DLA but DLA core {self.DLA_core} is not available",
            )
            return None
        return ICudaEngine(header, data[8 + size :], self._logger)


class ICudaEngine:
    def __init__(self, header: Dict[str, Any], onnx: bytes, logger: Any) -> None:
        self._header = header
        self._onnx = onnx
        self._logger = logger
        self._inputs = {e["name"]: e for e in header["inputs"]}
        self._outputs = {e["name"]: e for e in header["outputs"]}
        self._names = list(self._inputs) + list(self._outputs)
        self._contexts: weakref.WeakSet[IExecutionContext] = weakref.WeakSet()
        self._session: Any = None

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name in self._inputs:
            return TensorIOMode.INPUT
        return TensorIOMode.OUTPUT if name in self._outputs else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        entry = self._inputs.get(name) or self._outputs[name]
        return DataType(entry["dtype"])

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self._inputs:
            return Dims(self._inputs[name]["shape"])
        return Dims([d if isinstance(d, int) else -1 for d in self._outputs[name]["dims"]])

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self._header["profiles"]))

    @property
    def dynamic(self) -> bool:
        return bool(self._header["profiles"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
        if name not in self._inputs:
            raise RuntimeError(f"{name} is not an input")
        if not self._header["profiles"]:
            shape = Dims(self._inputs[name]["shape"])
            return [shape, shape, shape]
        return [Dims(s) for s in self._header["profiles"][profile_index][name]]

    def create_execution_context(self) -> IExecutionContext:
        context = IExecutionContext(self)
        self._contexts.add(context)
        return context

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                self._onnx, options, providers=["CPUExecutionProvider"]
            )
        names = list(self._outputs)
        return dict(zip(names, self._session.run(names, feeds)))


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self.active_optimization_profile = 0
        self._shapes: Dict[str, Dims] = {}
        self._addresses: Dict[str, int] = {}

    def _error(self, msg: str) -> None:
        _log(self._engine._logger, Severity.ERROR, msg)

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        engine = self._engine
        taken = [
            c for c in engine._contexts if c is not self and c.active_optimization_profile == profile_index
        ]
        if not 0 <= profile_index < engine.num_optimization_profiles or (engine.dynamic and taken):
            self._error(f"setOptimizationProfileAsync: profile {profile_index} is out of range or in use")
            raise RuntimeError("Error in set optimization profile async.")
        self.active_optimization_profile = profile_index
        self._shapes = {}  # input shapes must be given again for the new profile
        return True

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        engine = self._engine
        if name not in engine._inputs:
            self._error(f"setInputShape: {name} is not an input")
            return False
        lo, _, hi = engine.get_tensor_profile_shape(name, self.active_optimization_profile)
        shape = Dims(shape)
        if len(shape) != len(lo) or any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi)):
            self._error(
                f"setInputShape: {list(shape)} for {name} is outside the profile {list(lo)}..{list(hi)}"
            )
            return False
        self._shapes[name] = shape
        return True

    def _input_shape(self, name: str) -> Optional[Dims]:
        static = self._engine.get_tensor_shape(name)
        if all(d >= 0 for d in static):
            return static
        return self._shapes.get(name)

    def get_tensor_shape(self, name: str) -> Dims:
        engine = self._engine
        if name in engine._inputs:
            shape = self._input_shape(name)
            return shape if shape is not None else engine.get_tensor_shape(name)
        dims = []
        for d in engine._outputs[name]["dims"]:
            if isinstance(d, int):
                dims.append(d)
            else:
                shape = self._input_shape(d[0])
                dims.append(shape[d[1]] if shape is not None else -1)
        return Dims(dims)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
            self._error(f"setTensorAddress: {name} is not an I/O tensor")
            return False
        self._addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        engine = self._engine
        for name in engine._names:
            if not self._addresses.get(name):
                self._error(f"enqueueV3: Neither address or allocator is set for tensor {name}")
                return False
        feeds_shapes = {}
        for name in engine._inputs:
            shape = self._input_shape(name)
            if shape is None:
                self._error(f"enqueueV3: input shape of {name} is not specified (set_input_shape)")
                return False
            feeds_shapes[name] = shape
        if engine.dynamic:
            for other in engine._contexts:
                if (
                    other is not self
                    and other.active_optimization_profile == self.active_optimization_profile
                ):
                    self._error(
                        f"enqueueV3: optimization profile {self.active_optimization_profile} is used by "
                        "another execution context"
                    )
                    return False
        memory = world().memory
        memory.synchronize(stream_handle)
        feeds = {
            name: memory.read(
                self._addresses[name], shape, _NUMPY_OF[DataType(engine._inputs[name]["dtype"])]
            )
            for name, shape in feeds_shapes.items()
        }
        outputs = engine.run(feeds)
        for name, value in outputs.items():
            expected = tuple(self.get_tensor_shape(name))
            if any(d < 0 for d in expected):
                expected = value.shape  # data-dependent: whatever the model produced
            if tuple(value.shape) != tuple(expected):
                self._error(
                    f"output {name}: the model produced {list(value.shape)}, expected {list(expected)}"
                )
                return False
            memory.write(
                self._addresses[name], value.astype(_NUMPY_OF[DataType(engine._outputs[name]["dtype"])])
            )
        world().executions += 1
        return True
