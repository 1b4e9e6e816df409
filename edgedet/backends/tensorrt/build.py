"""Building engines: ONNX -> TensorRT network -> serialized engine, cached by key (see request.py).

Precision per version comes from plan.py; INT8 calibration from calibrator.py; the float-layer list,
DLA placement, the timing cache and progress reporting are here. A build runs with the device's primary
context pushed, so TensorRT and our CUDA buffers share it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

from edgedet.backends.tensorrt.cache import EngineCache, EngineKey, atomic_write_bytes, describe_changes
from edgedet.backends.tensorrt.calibrator import CalibratorState, attach_calibrator
from edgedet.backends.tensorrt.layers import LayerOverrides, resolve_overrides
from edgedet.backends.tensorrt.request import EngineRequest, prepare_request
from edgedet.backends.tensorrt.runtime import (
    Progress,
    RuntimeIdentity,
    dims_tuple,
    expand_path,
    require_tensorrt,
    runtime_identity,
    trt_logger,
    trt_major,
)
from edgedet.backends.tensorrt.shapes import input_profile, is_dynamic
from edgedet.cudart import open_runtime
from edgedet.errors import BackendError
from edgedet.types import InputSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgedet.backends.config import TensorRTBackend as TensorRTConfig
    from edgedet.cudart.api import CudaRuntime

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0


def build_engine(
    model_path: Path,
    cfg: TensorRTConfig,
    state_dir: Path,
    *,
    input_spec: Optional[InputSpec] = None,
    input_size: Optional[Tuple[int, int]] = None,
    progress: Optional[Progress] = None,
    force: bool = False,
    resolve: Optional[Callable[[str], Path]] = None,
) -> Path:
    """Build (or find in the cache) the engine for ``model_path`` with ``cfg``; return its path.

    ``input_spec`` is the model's preprocessing (edgedet.models.postprocess.resolve_input_spec): part of
    the key of a calibrated INT8 engine, whose calibration images are preprocessed like inference.
    ``input_size`` (width, height) fixes a dynamic image size. ``progress`` receives one line per build
    phase and a heartbeat; ``resolve`` maps config paths (relative to the config file) to real paths.
    """
    version = require_tensorrt()
    runtime = open_runtime(cfg.device)
    ident = runtime_identity(runtime, version)
    request = prepare_request(cfg, Path(model_path), ident, resolve or expand_path, input_size, input_spec)
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


def mark_good(cache: EngineCache, key: EngineKey, name: str, path: Path) -> None:
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


class Heartbeat:
    """Reports "still building" every 30 s: TensorRT builds on a Jetson take minutes."""

    def __init__(self, report: Progress) -> None:
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._report(f"  still building ({time.monotonic() - self._start:.0f} s)")


def set_flag(config: trt.IBuilderConfig, name: str) -> bool:
    import tensorrt as trt

    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        return False
    config.set_flag(flag)
    return True


def _build_serialized(
    request: EngineRequest,
    cfg: TensorRTConfig,
    runtime: CudaRuntime,
    ident: RuntimeIdentity,
    cache: EngineCache,
    input_spec: Optional[InputSpec],
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
        input_profile(t.name, dims_tuple(t.shape), cfg.max_batch, cfg.opt_batch, input_size) for t in inputs
    ]
    dynamic = any(is_dynamic(dims_tuple(t.shape)) for t in inputs)
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
        set_flag(config, "FP16")
    if plan.int8_flag:
        set_flag(config, "INT8")  # also for Q/DQ networks, where the flag still exists
    applied = 0
    if plan.layer_overrides and request.overrides:
        applied = _apply_layer_overrides(config, layers, request.overrides, plan.fp16_flag)

    calibrator: Optional[CalibratorState] = None
    if plan.int8_flag and not has_qdq:
        calibrator = attach_calibrator(
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
        with Heartbeat(report):
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
            set_flag(config, "FP16")
            fp16_enabled = True
        dtype = trt.float16 if precision == "fp16" else trt.float32
        layer.precision = dtype
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, dtype)
        applied += 1
    # OBEY makes TensorRT fail rather than silently ignore a constraint; both deprecated in 10.12
    if not set_flag(config, "OBEY_PRECISION_CONSTRAINTS"):
        set_flag(config, "PREFER_PRECISION_CONSTRAINTS")
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
        set_flag(config, "GPU_FALLBACK")
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
