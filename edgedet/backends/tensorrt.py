"""The TensorRT backend and engine builder: the only module that imports tensorrt.

Works on TensorRT 8.5 through 11 by using only the named-tensor API (``num_io_tensors``,
``get_tensor_name/mode/shape/dtype``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and
``build_serialized_network``; calls that exist only in some versions sit behind ``hasattr``. Everything that
can be decided without TensorRT lives in pure modules beside this one: engine_cache (keys, paths, atomic
writes), trt_plan (which ONNX and flags per version), trt_shapes (profiles, dtypes), trt_layers (the
float-layer list), trt_calibration (calibration batches), trt_slots/gpu_slots (pipelined slots).

CUDA goes through edgedet.cudart (pycuda today) with the device's primary context pushed in every thread,
so TensorRT's runtime API and our streams and buffers share one context.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from edgedet.backends.engine_cache import (
    CalibrationKey,
    EngineCache,
    EngineKey,
    atomic_write_bytes,
    describe_changes,
    file_sha256,
    read_json,
    read_platform_model,
    text_digest,
)
from edgedet.backends.gpu_slots import Binding, Feed, GpuSlot, SlotPipeline
from edgedet.backends.trt_layers import (
    LayerOverrides,
    load_layer_list,
    overrides_digest_items,
    resolve_overrides,
)
from edgedet.backends.trt_plan import BuildPlan, plan_build, reported_precision
from edgedet.backends.trt_shapes import (
    Profile,
    input_profile,
    is_dynamic,
    numpy_dtype,
    spec_shape,
    split_batches,
)
from edgedet.backends.trt_slots import SlotHandle
from edgedet.errors import BackendError, DependencyError
from edgedet.types import InputSpec, TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgedet.backends.config import TensorRTBackend as TensorRTConfig
    from edgedet.cudart.api import CudaRuntime, DeviceBuffer

log = logging.getLogger(__name__)
trt_log = logging.getLogger("edgedet.tensorrt")  # TensorRT's own messages

Progress = Callable[[str], None]
SpecSource = Union[InputSpec, Callable[[TensorSpec], InputSpec], None]
_HEARTBEAT_S = 30.0


# -- TensorRT itself ------------------------------------------------------------------------------
def require_tensorrt() -> str:
    """Import TensorRT or raise DependencyError saying where it comes from; returns its version."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(
            "the tensorrt backend needs TensorRT's Python bindings, which come with JetPack "
            "(sudo apt install python3-libnvinfer; in a virtualenv use --system-site-packages) "
            f"- they are not on PyPI for Jetson ({exc})"
        ) from exc
    version = getattr(tensorrt, "__version__", None)
    if version is None or not hasattr(tensorrt, "Runtime"):
        raise DependencyError(
            "the 'tensorrt' module found is not TensorRT's Python bindings (only type stubs installed?)"
        )
    return str(version)


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise BackendError(f"cannot read the TensorRT version {version!r}") from exc


_LOGGER: Optional[trt.ILogger] = None
_LOGGER_LOCK = threading.Lock()


def trt_logger() -> trt.ILogger:
    """The process's one TensorRT logger, routed into Python logging ('edgedet.tensorrt')."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = _make_logger()
        return _LOGGER


def _make_logger() -> trt.ILogger:
    import tensorrt as trt

    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,  # TensorRT's INFO is build chatter
        severity.VERBOSE: 5,
    }

    class PythonLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the pybind11 trampoline needs the base initialiser

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            try:
                level = levels.get(severity, logging.INFO)
                if trt_log.isEnabledFor(level):
                    trt_log.log(level, "%s", msg)
            except Exception:  # never raise into TensorRT
                pass

    return PythonLogger()


def _dims(dims: trt.Dims) -> Tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class RuntimeIdentity:
    trt_version: str
    device_name: str
    compute_capability: str
    platform: str

    def describe(self) -> str:
        where = f"{self.device_name} (sm_{self.compute_capability.replace('.', '')})"
        if self.platform:
            where += f" on {self.platform}"
        return f"TensorRT {self.trt_version} on {where}"


def runtime_identity(runtime: CudaRuntime, trt_version: str) -> RuntimeIdentity:
    major, minor = runtime.compute_capability
    return RuntimeIdentity(trt_version, runtime.device_name, f"{major}.{minor}", read_platform_model())


# -- keys and plans -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Request:
    model: Path  # model.path: names the engine files
    plan: BuildPlan
    key: EngineKey
    overrides: LayerOverrides
    calibration: Optional[Path]


def _prepare(
    cfg: TensorRTConfig,
    model_path: Path,
    ident: RuntimeIdentity,
    resolve: Callable[[str], Path],
    input_size: Optional[Tuple[int, int]],
    input_spec: SpecSource,
) -> _Request:
    overrides: LayerOverrides = load_layer_list(resolve(cfg.float_layers)) if cfg.float_layers else {}
    plan = plan_build(
        cfg.precision,
        trt_major(ident.trt_version),
        model_path,
        qdq_model=resolve(cfg.qdq_model) if cfg.qdq_model else None,
        fp16_model=resolve(cfg.fp16_model) if cfg.fp16_model else None,
        has_float_layers=bool(overrides),
    )
    if not plan.onnx.is_file():
        raise BackendError(f"model file {plan.onnx} does not exist")
    for note in plan.notes:
        log.warning("%s", note)
    calibration = resolve(cfg.calibration) if (plan.may_calibrate and cfg.calibration) else None
    option_parts: List[object] = []
    if plan.layer_overrides:
        option_parts.append(["float_layers", overrides_digest_items(overrides)])
    if calibration is not None:
        from edgedet.backends.trt_calibration import source_id, spec_id

        option_parts.append(["calibration", source_id(calibration, cfg.calibration_images)])
        if isinstance(input_spec, InputSpec):
            option_parts.append(["preprocess", spec_id(input_spec)])
    if cfg.dla_core is not None:
        option_parts.append(["gpu_fallback", cfg.gpu_fallback])
    opt = cfg.opt_batch or cfg.max_batch
    key = EngineKey(
        onnx_sha256=file_sha256(plan.onnx),
        precision=cfg.precision,
        trt_version=ident.trt_version,
        device_name=ident.device_name,
        compute_capability=ident.compute_capability,
        platform=ident.platform,
        input_shapes=(("image_size", tuple(input_size)),) if input_size else (),
        batch_range=(1, opt, cfg.max_batch),
        profiles=1 if cfg.dla_core is not None else cfg.slots,
        dla_core=cfg.dla_core,
        options=text_digest(option_parts) if option_parts else "",
    )
    return _Request(model_path, plan, key, overrides, calibration)


# -- building -------------------------------------------------------------------------------------
def build_engine(
    model_path: Path,
    cfg: TensorRTConfig,
    state_dir: Path,
    *,
    input_spec: SpecSource = None,
    input_size: Optional[Tuple[int, int]] = None,
    progress: Optional[Progress] = None,
    force: bool = False,
    resolve: Optional[Callable[[str], Path]] = None,
) -> Path:
    """Build (or find in the cache) the engine for ``model_path`` with ``cfg``; return its path.

    ``input_spec`` (an InputSpec, or a function of the network's input TensorSpec returning one) is only
    needed for implicit INT8 calibration, which preprocesses calibration images like inference does.
    ``input_size`` (width, height) fixes a dynamic image size. ``progress`` receives one line per build
    phase and a heartbeat; ``resolve`` maps config paths (relative to the config file) to real paths.
    """
    version = require_tensorrt()
    from edgedet.cudart import open_runtime

    runtime = open_runtime(cfg.device)
    ident = runtime_identity(runtime, version)
    request = _prepare(cfg, Path(model_path), ident, resolve or _expand, input_size, input_spec)
    cache = EngineCache(state_dir)
    name = request.model.name
    if not force:
        found = cache.find(request.key, name)
        if found is not None:
            return found
    report = progress or (lambda line: log.info("%s", line))
    previous = cache.last_good(name, cfg.precision, request.key)
    if previous is not None:
        reasons = describe_changes(previous[1], request.key) or ["forced rebuild"]
        report(f"rebuilding the {cfg.precision} engine for {name}: " + "; ".join(reasons))
    else:
        report(f"building the {cfg.precision} engine for {name} with {ident.describe()} (takes minutes)")
    with runtime.activate():
        data, info = _build_serialized(request, cfg, runtime, ident, cache, input_spec, input_size, report)
    try:
        path = cache.store(request.key, name, data, info)
    except OSError as exc:  # disk full, read-only state directory ...
        raise BackendError(f"cannot write the engine to {cache.engines_dir}: {exc}") from exc
    report(f"engine written: {path} ({len(data) / 1e6:.1f} MB in {info['build_seconds']:.0f} s)")
    try:
        for old in cache.prune(name, cfg.keep_engines, protect=[path]):
            log.info("deleted old engine %s", old.name)
    except OSError as exc:
        log.warning("could not delete old engines: %s", exc)
    return path


def _mark_good(cache: EngineCache, key: EngineKey, name: str, path: Path) -> None:
    try:
        cache.mark_good(key, name, path)
    except OSError as exc:  # the engine runs; only the fallback pointer could not be saved
        log.warning("could not record %s as the last good engine: %s", path.name, exc)


def _make_progress_monitor(report: Progress) -> Optional[trt.IProgressMonitor]:
    import tensorrt as trt

    if not hasattr(trt, "IProgressMonitor"):  # TensorRT >= 10.0
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            try:
                if not parent_phase:
                    report(f"  {phase_name} ({num_steps} steps)")
                else:
                    log.debug("build phase %s / %s (%d steps)", parent_phase, phase_name, num_steps)
            except Exception:
                pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


class _Heartbeat:
    """Reports "still building" every 30 s: TensorRT builds on a Jetson take minutes."""

    def __init__(self, report: Progress) -> None:
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(_HEARTBEAT_S):
            self._report(f"  still building ({time.monotonic() - self._start:.0f} s)")


def _set_flag(config: trt.IBuilderConfig, name: str) -> bool:
    import tensorrt as trt

    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        return False
    config.set_flag(flag)
    return True


def _build_serialized(
    request: _Request,
    cfg: TensorRTConfig,
    runtime: CudaRuntime,
    ident: RuntimeIdentity,
    cache: EngineCache,
    input_spec: SpecSource,
    input_size: Optional[Tuple[int, int]],
    report: Progress,
) -> Tuple[bytes, Dict[str, Any]]:
    import tensorrt as trt

    plan = request.plan
    logger = trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    # 8.x needs explicit batch; 10.x ignores the flag; 11 no longer has it
    if trt_major(ident.trt_version) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    report(f"  parsing {plan.onnx}")
    if not parser.parse_from_file(str(plan.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {plan.onnx}:\n  " + "\n  ".join(errors or ["(no detail)"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_mb) << 20)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    profiles = [
        input_profile(t.name, _dims(t.shape), cfg.max_batch, cfg.opt_batch, input_size) for t in inputs
    ]
    dynamic = any(is_dynamic(_dims(t.shape)) for t in inputs)
    if dynamic:
        for _ in range(request.key.profiles):
            profile = builder.create_optimization_profile()
            for p in profiles:
                profile.set_shape(p.name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
            if config.add_optimization_profile(profile) < 0:
                raise BackendError(f"TensorRT rejected the optimization profile {profiles}")

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    qdq_types = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    has_qdq = any(layer.type in qdq_types for layer in layers)
    if plan.needs_qdq and not has_qdq:
        raise BackendError(
            f"{plan.onnx} holds no QuantizeLinear/DequantizeLinear nodes: INT8 on TensorRT 11 needs a Q/DQ "
            "model (edgedet quantize; set backend.qdq_model)"
        )

    # precision (TensorRT < 11; on 11 the flags do not exist and the ONNX types decide)
    if plan.fp16_flag:
        _set_flag(config, "FP16")
    if plan.int8_flag:
        _set_flag(config, "INT8")  # also for Q/DQ networks, where the flag still exists
    applied = 0
    if plan.layer_overrides and request.overrides:
        applied = _apply_layer_overrides(config, layers, request.overrides, plan.fp16_flag)

    calibrator: Optional[_CalibratorState] = None
    if plan.int8_flag and not has_qdq:
        calibrator = _attach_calibrator(
            builder,
            config,
            request,
            cfg,
            runtime,
            ident,
            cache,
            inputs,
            profiles,
            dynamic,
            input_spec,
            report,
        )

    if cfg.dla_core is not None:
        _use_dla(builder, config, layers, cfg.dla_core, cfg.gpu_fallback, report)

    timing_path = cache.timing_cache_path(ident.trt_version, ident.device_name, ident.compute_capability)
    if cfg.timing_cache:
        _load_timing_cache(config, timing_path)

    monitor = _make_progress_monitor(report)
    if monitor is not None:
        config.progress_monitor = monitor

    started = time.monotonic()
    try:
        with _Heartbeat(report):
            serialized: Optional[trt.IHostMemory] = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    seconds = time.monotonic() - started
    if calibrator is not None and calibrator.error is not None:
        raise BackendError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise BackendError("TensorRT could not build the engine (its errors are logged above)")
    data = bytes(serialized)

    if cfg.timing_cache:
        try:
            atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
        except (OSError, RuntimeError) as exc:
            log.warning("could not save the timing cache %s: %s", timing_path, exc)

    info: Dict[str, Any] = {
        "build_seconds": seconds,
        "onnx": str(plan.onnx),
        "trt": ident.describe(),
        "inputs": {p.name: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles},
        "explicit_int8": has_qdq,
        "calibrated_images": calibrator.images if calibrator is not None else 0,
        "float_layers_applied": applied,
        "notes": list(plan.notes),
    }
    return data, info


def _apply_layer_overrides(
    config: trt.IBuilderConfig,
    layers: Sequence[trt.ILayer],
    overrides: LayerOverrides,
    fp16_enabled: bool,
) -> int:
    import tensorrt as trt

    described = [
        (layer.name, [layer.get_output(j).name for j in range(layer.num_outputs)]) for layer in layers
    ]
    matched, missing = resolve_overrides(overrides, described, "fp16" if fp16_enabled else "fp32")
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        log.warning("%d layer(s) of the float-layer list are not in this network: %s", len(missing), shown)
    skip = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE, trt.LayerType.SHAPE, trt.LayerType.CONSTANT)
    floats = (trt.float32, trt.float16)
    applied = 0
    for index, precision in matched.items():
        layer = layers[index]
        if layer.type in skip:
            continue
        if precision == "fp16" and not fp16_enabled:
            _set_flag(config, "FP16")
            fp16_enabled = True
        dtype = trt.float16 if precision == "fp16" else trt.float32
        layer.precision = dtype
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, dtype)
        applied += 1
    # OBEY makes TensorRT fail rather than silently ignore a constraint; both deprecated in 10.12
    if not _set_flag(config, "OBEY_PRECISION_CONSTRAINTS"):
        _set_flag(config, "PREFER_PRECISION_CONSTRAINTS")
    log.info("keeping %d layer(s) in floating point (float-layer list)", applied)
    return applied


def _use_dla(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    layers: Sequence[trt.ILayer],
    core: int,
    gpu_fallback: bool,
    report: Progress,
) -> None:
    import tensorrt as trt

    available = int(builder.num_DLA_cores)
    if core >= available:
        raise BackendError(f"DLA core {core} requested, but this device has {available} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if gpu_fallback:
        _set_flag(config, "GPU_FALLBACK")
    on_gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    if on_gpu and not gpu_fallback:
        raise BackendError(
            f"{len(on_gpu)} layer(s) cannot run on the DLA (e.g. {on_gpu[0]}) and gpu_fallback is off"
        )
    report(f"  DLA core {core}: {len(layers) - len(on_gpu)} layer(s) on the DLA, {len(on_gpu)} on the GPU")


def _load_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    blob = b""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read the timing cache %s: %s", path, exc)
    try:
        timing = config.create_timing_cache(blob)
        if timing is not None and config.set_timing_cache(timing, False):
            if blob:
                log.info("using the timing cache %s", path)
            return
    except (RuntimeError, TypeError) as exc:
        log.warning("timing cache %s unusable: %s", path, exc)
    log.warning("ignoring the timing cache %s (made by another TensorRT or GPU, or corrupt)", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


# -- INT8 calibration (TensorRT 8.5 - 10) ----------------------------------------------------------
class _CalibratorState:
    """Owns the calibrator's device buffer and remembers an exception raised inside TensorRT's callbacks."""

    def __init__(self, calibrator: object, buffer: DeviceBuffer, runtime: CudaRuntime) -> None:
        self.calibrator = calibrator
        self.buffer = buffer
        self.runtime = runtime
        self.error: Optional[BaseException] = None
        self.images = 0

    def free(self) -> None:
        self.buffer.free()


def _resolve_spec(input_spec: SpecSource, tensor: TensorSpec) -> InputSpec:
    if input_spec is None:
        raise BackendError(
            "implicit INT8 calibration needs the model's preprocessing (input_spec) to prepare the "
            "calibration images like inference does"
        )
    spec = input_spec(tensor) if callable(input_spec) else input_spec
    return dataclasses.replace(
        spec, dtype=tensor.dtype if tensor.dtype in ("float32", "float16") else spec.dtype
    )


def _attach_calibrator(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    request: _Request,
    cfg: TensorRTConfig,
    runtime: CudaRuntime,
    ident: RuntimeIdentity,
    cache: EngineCache,
    inputs: Sequence[trt.ITensor],
    profiles: Sequence[Profile],
    dynamic: bool,
    input_spec: SpecSource,
    report: Progress,
) -> _CalibratorState:
    import tensorrt as trt

    from edgedet.backends.trt_calibration import CalibrationBatches, iter_frames, source_id, spec_id
    from edgedet.preprocess.cpu import CpuPreprocessor

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise BackendError(
            f"TensorRT {ident.trt_version} has no implicit INT8 calibration: give a Q/DQ model "
            "(backend.qdq_model)"
        )
    if request.calibration is None:
        raise BackendError(
            f"INT8 needs calibration data for {request.plan.onnx.name}: set backend.calibration (an image "
            "folder or a video) or give a Q/DQ model (backend.qdq_model, from edgedet quantize)"
        )
    if len(inputs) != 1:
        raise BackendError(f"implicit INT8 calibration supports one input; the model has {len(inputs)}")
    tensor = inputs[0]
    dtype = numpy_dtype(tensor.dtype.name, tensor.name)
    profile = profiles[0]
    spec = _resolve_spec(input_spec, TensorSpec(tensor.name, spec_shape(_dims(tensor.shape)), dtype))
    batch = min(profile.max[0], 8) if dynamic else profile.max[0]
    shape = (batch, *profile.max[1:])
    if (spec.height, spec.width) != tuple(shape[2:4]):
        raise BackendError(
            f"the preprocessing spec {spec.width}x{spec.height} does not match the input {shape}"
        )
    if dynamic:
        calib_profile = builder.create_optimization_profile()
        dims = trt.Dims(list(shape))
        calib_profile.set_shape(tensor.name, dims, dims, dims)
        config.set_calibration_profile(calib_profile)

    ckey = CalibrationKey(
        onnx_sha256=request.key.onnx_sha256,
        trt_version=ident.trt_version,
        input_shape=tuple(shape),
        algorithm="entropy2",
        data_id=source_id(request.calibration, cfg.calibration_images),
        preprocess_id=spec_id(spec),
    )
    name = request.model.name
    cached = cache.read_calibration(ckey, name)
    if cached is not None:
        report(f"  using the calibration cache {cache.calibration_path(ckey, name).name}")
    else:
        report(f"  calibrating INT8 on up to {cfg.calibration_images} images from {request.calibration}")
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = runtime.alloc(nbytes)
    stream = runtime.stream()

    def batches() -> Iterator[np.ndarray]:
        frames = iter_frames(request.calibration, cfg.calibration_images)  # type: ignore[arg-type]
        pre = CpuPreprocessor(spec)
        return iter(CalibrationBatches(frames, pre, batch, dtype))

    state: _CalibratorState

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base initialiser
            self._batches: Optional[Iterator[np.ndarray]] = None

        def get_batch_size(self) -> int:
            return batch

        # TensorRT wants None (not an empty list) when the data is exhausted
        def get_batch(self, names: List[str]) -> Optional[List[int]]:  # type: ignore[override]
            try:
                if self._batches is None:
                    self._batches = batches()
                array = next(self._batches, None)
                if array is None:
                    return None
                runtime.htod_async(buffer.ptr, np.ascontiguousarray(array), stream)
                stream.synchronize()
                state.images += batch
                if state.images % (batch * 10) == 0:
                    report(f"  calibrated on {state.images} images")
                return [buffer.ptr]
            except BaseException as exc:  # an exception must not cross into TensorRT
                state.error = exc
                return None

        def read_calibration_cache(self) -> Optional[bytes]:  # type: ignore[override]
            return cached

        def write_calibration_cache(self, cache_blob: Any) -> None:
            try:
                path = cache.write_calibration(ckey, name, bytes(cache_blob))
                report(f"  calibration cache written: {path.name}")
            except OSError as exc:
                log.warning("could not write the calibration cache: %s", exc)

    calibrator = EntropyCalibrator()
    state = _CalibratorState(calibrator, buffer, runtime)
    config.int8_calibrator = calibrator
    return state


# -- loading and running --------------------------------------------------------------------------
def _deserialize_error(path: Path, ident: RuntimeIdentity, detail: str = "") -> str:
    meta = read_json(path.with_suffix(".json"))
    built = None
    if meta is not None and isinstance(meta.get("key"), dict):
        try:
            built = EngineKey.from_dict(meta["key"])
        except ValueError:
            built = None
    here = ident.describe()
    if built is not None:
        there = RuntimeIdentity(
            built.trt_version, built.device_name, built.compute_capability, built.platform
        ).describe()
        if built.runs_here(ident.trt_version, ident.device_name, ident.compute_capability, ident.platform):
            return (
                f"cannot load engine {path} (built with {there}, the same as here): corrupt? {detail}".strip()
            )
        return (
            f"engine {path} was built with {there}; this is {here}. Engines only run on the TensorRT "
            "version and GPU they were built with: delete it, or let edgedet rebuild it (edgedet "
            "build-engine)"
        )
    return (
        f"cannot load engine {path}: it was built by another TensorRT version or for another GPU, or it is "
        f"corrupt (this is {here}). Rebuild it on this device with edgedet build-engine. {detail}"
    ).strip()


def load_engine(
    path: Path,
    cfg: TensorRTConfig,
    runtime: Optional[CudaRuntime] = None,
    precision: Optional[str] = None,
) -> TrtBackend:
    """Deserialize ``path`` and set up its slots; BackendError naming versions on a mismatch."""
    import tensorrt as trt

    version = require_tensorrt()
    if runtime is None:
        from edgedet.cudart import open_runtime

        runtime = open_runtime(cfg.device)
    ident = runtime_identity(runtime, version)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BackendError(f"cannot read engine {path}: {exc}") from exc
    with runtime.activate():
        trt_runtime = trt.Runtime(trt_logger())
        if cfg.dla_core is not None:
            trt_runtime.DLA_core = cfg.dla_core
        try:
            engine: Optional[trt.ICudaEngine] = trt_runtime.deserialize_cuda_engine(data)
        except (RuntimeError, TypeError) as exc:  # some versions raise instead of returning None
            raise BackendError(_deserialize_error(Path(path), ident, str(exc))) from exc
        if engine is None:
            raise BackendError(_deserialize_error(Path(path), ident))
        return TrtBackend(engine, trt_runtime, runtime, cfg, Path(path), precision or cfg.precision)


class TrtBackend:
    """A loaded engine: the Backend protocol (``infer``) plus the pipelined ``submit``/``collect``.

    ``max_batch`` is the largest batch one call takes (frames from several cameras); ``slots`` the
    submissions that can be in flight at once, each with its own stream, execution context (and
    optimization profile, for dynamic shapes), pinned host and device buffers. ``last_timings`` holds the
    GPU times of the last collected result (upload_ms, infer_ms, download_ms).
    """

    name = "tensorrt"
    accepts_device_tensors = True

    def __init__(
        self,
        engine: trt.ICudaEngine,
        trt_runtime: trt.Runtime,
        runtime: CudaRuntime,
        cfg: TensorRTConfig,
        path: Path,
        precision: str,
    ) -> None:
        import tensorrt as trt

        self._engine: Optional[trt.ICudaEngine] = engine
        self._trt_runtime: Optional[trt.Runtime] = trt_runtime
        self.runtime = runtime
        self.path = path
        self.precision = reported_precision(precision, bool(cfg.float_layers))
        self._contexts: List[trt.IExecutionContext] = []
        self._pipeline: Optional[SlotPipeline] = None

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if not in_names or not out_names:
            raise BackendError(f"engine {path} has no inputs or no outputs")
        dtypes = {n: numpy_dtype(engine.get_tensor_dtype(n).name, n) for n in names}
        shapes = {n: _dims(engine.get_tensor_shape(n)) for n in names}
        self._inputs = [TensorSpec(n, spec_shape(shapes[n]), dtypes[n]) for n in in_names]
        self._outputs = [TensorSpec(n, spec_shape(shapes[n]), dtypes[n]) for n in out_names]
        self._dynamic = any(is_dynamic(shapes[n]) for n in in_names)

        if self._dynamic:
            profile_count = int(engine.num_optimization_profiles)
            max_shapes = {n: _dims(engine.get_tensor_profile_shape(n, 0)[2]) for n in in_names}
            self.max_batch = min(max_shapes[n][0] for n in in_names)
            slots = min(cfg.slots, profile_count)
            if slots < cfg.slots:
                log.warning(
                    "engine %s has %d optimization profile(s): using %d slot(s) instead of %d",
                    path.name, profile_count, slots, cfg.slots,
                )  # fmt: skip
        else:
            max_shapes = {n: shapes[n] for n in in_names}
            self.max_batch = min(shapes[n][0] for n in in_names)
            slots = cfg.slots
        self.slots = slots

        with runtime.activate():
            try:
                for i in range(slots):
                    context: Optional[trt.IExecutionContext] = engine.create_execution_context()
                    if context is None:
                        raise BackendError(
                            f"TensorRT could not create execution context {i} (out of memory?)"
                        )
                    self._contexts.append(context)
                # output shapes at the largest batch, from context 0 (profile 0 is its default)
                probe = self._contexts[0]
                if self._dynamic:
                    for n in in_names:
                        if not probe.set_input_shape(n, max_shapes[n]):
                            raise BackendError(
                                f"engine {path.name} rejects input {n} shape {list(max_shapes[n])}"
                            )
                out_items: Dict[str, Tuple[int, ...]] = {}
                for n in out_names:
                    dims = _dims(probe.get_tensor_shape(n))
                    if any(d < 0 for d in dims):
                        raise BackendError(
                            f"output {n} has a data-dependent shape {list(dims)}; edgedet needs fixed output "
                            "shapes (use an EfficientNMS-style export with a fixed max detections)"
                        )
                    out_items[n] = dims[1:]
                in_bindings = [Binding(n, max_shapes[n][1:], dtypes[n]) for n in in_names]
                out_bindings = [Binding(n, out_items[n], dtypes[n]) for n in out_names]
                self._pipeline = SlotPipeline(
                    runtime,
                    in_bindings,
                    out_bindings,
                    slots,
                    self.max_batch,
                    self._execute,
                    bind_in_place=self._dynamic or self.max_batch == 1,
                )
                if self._dynamic:
                    # with dynamic shapes each concurrently used context needs its own profile
                    for i, slot in enumerate(self._pipeline.slots):
                        if i > 0 and not self._contexts[i].set_optimization_profile_async(
                            i, slot.stream.handle
                        ):
                            raise BackendError(f"cannot select optimization profile {i}")
                        slot.stream.synchronize()
            except BaseException:
                self._release()
                raise
        self._in_names = in_names
        self._metadata = {
            "engine": path.name,
            "tensorrt": str(trt.__version__),
            "precision": self.precision,
            "max_batch": str(self.max_batch),
            "slots": str(self.slots),
        }
        log.info(
            "TensorRT engine %s loaded: %s precision, batch up to %d, %d slot(s)",
            path.name, self.precision, self.max_batch, self.slots,
        )  # fmt: skip

    # -- Backend protocol ------------------------------------------------------------------------
    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return list(self._outputs)

    @property
    def metadata(self) -> Mapping[str, str]:
        return dict(self._metadata)

    @property
    def last_timings(self) -> Dict[str, float]:
        return dict(self._live().last_timings)

    def infer(self, feeds: Mapping[str, Feed]) -> Dict[str, np.ndarray]:
        """Synchronous inference; a batch larger than ``max_batch`` is split and the outputs joined."""
        pipeline = self._live()
        if pipeline.ring.in_flight:
            raise BackendError("infer() while submitted results are uncollected: collect them first")
        total = _batch_of(feeds, self._in_names)
        if total <= self.max_batch:
            return pipeline.collect(pipeline.submit(feeds))
        parts: List[Dict[str, np.ndarray]] = []
        for start, stop in split_batches(total, self.max_batch):
            chunk = {name: _slice(value, start, stop) for name, value in feeds.items()}
            parts.append(pipeline.collect(pipeline.submit(chunk)))
        return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}

    # -- pipelined API ---------------------------------------------------------------------------
    def submit(self, feeds: Mapping[str, Feed], wait: Optional[float] = 0.0) -> SlotHandle:
        """Queue one batch (host arrays, or DeviceTensors from the CUDA preprocessor) and return at
        once; ``wait`` seconds to wait for a free slot (None: forever) before raising SlotsFull."""
        return self._live().submit(feeds, wait=wait)

    def collect(self, handle: SlotHandle) -> Dict[str, np.ndarray]:
        """The outputs of ``handle``, which must be the oldest submission (results stay in order)."""
        return self._live().collect(handle)

    def _execute(self, slot: GpuSlot, batch: int, in_ptrs: Dict[str, int], out_ptrs: Dict[str, int]) -> None:
        context = self._contexts[slot.index]
        pipeline = self._live()
        for b in pipeline.inputs:
            if self._dynamic and not context.set_input_shape(b.name, (batch, *b.item_shape)):
                raise BackendError(f"input {b.name}: batch {batch} is outside the engine's profile")
            context.set_tensor_address(b.name, in_ptrs[b.name])
        for name, ptr in out_ptrs.items():
            context.set_tensor_address(name, ptr)
        if not context.execute_async_v3(slot.stream.handle):
            raise BackendError("TensorRT execute_async_v3 failed (its errors are logged above)")

    def _live(self) -> SlotPipeline:
        if self._pipeline is None:
            raise BackendError("the TensorRT backend is closed")
        return self._pipeline

    def _release(self) -> None:
        # order matters: buffers and contexts before the engine, the engine before the runtime
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self._contexts = []
        self._engine = None
        self._trt_runtime = None

    def close(self) -> None:
        if self._engine is None:
            return
        with self.runtime.activate():
            self._release()


def _batch_of(feeds: Mapping[str, Feed], names: Sequence[str]) -> int:
    value = feeds[names[0]] if names and names[0] in feeds else next(iter(feeds.values()))
    if isinstance(value, np.ndarray):
        return int(value.shape[0])
    if isinstance(value, (list, tuple)):
        return len(value)
    return 1


def _slice(value: Feed, start: int, stop: int) -> Feed:
    if isinstance(value, (np.ndarray, list, tuple)):
        return value[start:stop]
    return value


# -- the factory's entry point --------------------------------------------------------------------
def open_tensorrt_backend(
    cfg: TensorRTConfig,
    model_path: Path,
    state_dir: Path,
    *,
    input_spec: SpecSource = None,
    input_size: Optional[Tuple[int, int]] = None,
    resolve: Optional[Callable[[str], Path]] = None,
    progress: Optional[Progress] = None,
) -> TrtBackend:
    """The engine for ``model_path`` with ``cfg``: the prebuilt ``cfg.engine``, else the cached engine
    whose key matches, else a new build (kept in ``state_dir/engines``). A failed build falls back to the
    last engine that loaded for this model and precision, if this TensorRT and GPU can run it."""
    version = require_tensorrt()
    from edgedet.cudart import open_runtime

    resolve = resolve or _expand
    runtime = open_runtime(cfg.device)
    if cfg.engine:
        engine_path = resolve(cfg.engine)
        if not engine_path.is_file():
            raise BackendError(f"backend.engine {engine_path} does not exist")
        return load_engine(engine_path, cfg, runtime)

    ident = runtime_identity(runtime, version)
    model_path = Path(model_path)
    request = _prepare(cfg, model_path, ident, resolve, input_size, input_spec)
    cache = EngineCache(state_dir)
    name = model_path.name
    path = cache.find(request.key, name)
    key = request.key
    if path is not None:
        try:
            backend = load_engine(path, cfg, runtime)
            _mark_good(cache, key, name, path)
            return backend
        except BackendError as exc:
            log.error("cached engine %s does not load (%s); rebuilding it", path.name, exc)
            path = None
    if not cfg.build_on_start:
        raise BackendError(
            f"no cached {cfg.precision} engine for {name} matches {ident.describe()} and "
            "backend.build_on_start is off: run `edgedet build-engine --config ...` first"
        )
    try:
        path = build_engine(
            model_path, cfg, state_dir, input_spec=input_spec, input_size=input_size,
            progress=progress, force=True, resolve=resolve,
        )  # fmt: skip
    except BackendError as exc:
        fallback = cache.last_good(name, cfg.precision, key)
        if fallback is None:
            raise
        path, key = fallback
        log.error(
            "building the engine failed: %s. Running the last good engine %s instead (built from model "
            "sha256 %s); fix the problem and restart to rebuild",
            exc, path.name, key.onnx_sha256[:12],
        )  # fmt: skip
    backend = load_engine(path, cfg, runtime)
    _mark_good(cache, key, name, path)
    return backend
