"""A loaded engine: deserializing it (with a clear error for a foreign one) and running it in slots.

Works on TensorRT 8.5 through 11 by using only the named-tensor API (``num_io_tensors``,
``get_tensor_name/mode/shape/dtype``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``).
CUDA goes through edgedet.cudart with the device's primary context pushed in every thread, so TensorRT's
runtime API and our streams and buffers share one context.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgedet.backends.tensorrt.cache import EngineKey, read_json
from edgedet.backends.tensorrt.gpu_slots import Binding, Feed, GpuSlot, SlotPipeline
from edgedet.backends.tensorrt.plan import reported_precision
from edgedet.backends.tensorrt.runtime import (
    RuntimeIdentity,
    dims_tuple,
    require_tensorrt,
    runtime_identity,
    trt_logger,
)
from edgedet.backends.tensorrt.shapes import is_dynamic, numpy_dtype, spec_shape, split_batches
from edgedet.backends.tensorrt.slots import SlotHandle
from edgedet.cudart import open_runtime
from edgedet.errors import BackendError
from edgedet.types import TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgedet.backends.config import TensorRTBackend as TensorRTConfig
    from edgedet.cudart.api import CudaRuntime

log = logging.getLogger(__name__)


def deserialize_error(path: Path, ident: RuntimeIdentity, detail: str = "") -> str:
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
            raise BackendError(deserialize_error(Path(path), ident, str(exc))) from exc
        if engine is None:
            raise BackendError(deserialize_error(Path(path), ident))
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
        shapes = {n: dims_tuple(engine.get_tensor_shape(n)) for n in names}
        self._inputs = [TensorSpec(n, spec_shape(shapes[n]), dtypes[n]) for n in in_names]
        self._outputs = [TensorSpec(n, spec_shape(shapes[n]), dtypes[n]) for n in out_names]
        self._dynamic = any(is_dynamic(shapes[n]) for n in in_names)

        if self._dynamic:
            profile_count = int(engine.num_optimization_profiles)
            max_shapes = {n: dims_tuple(engine.get_tensor_profile_shape(n, 0)[2]) for n in in_names}
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
                out_bindings = [
                    _output_binding(n, dims_tuple(probe.get_tensor_shape(n)), dtypes[n], self.max_batch)
                    for n in out_names
                ]
                in_bindings = [Binding(n, max_shapes[n][1:], dtypes[n]) for n in in_names]
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
                    # (indices, not slot locals: a traceback holding a slot would release its stream
                    # after activate() ends)
                    for i in range(1, slots):
                        _select_profile(self._contexts[i], i, self._live().slots[i].stream.handle, path)
                        self._live().slots[i].stream.synchronize()
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


def _output_binding(name: str, dims: Tuple[int, ...], dtype: str, max_batch: int) -> Binding:
    """The buffer for one output, sized from its real shape at the largest batch (after the inputs'
    shapes are set): batch-major when it starts with the batch axis, else whole (batch 1 only)."""
    if any(d < 0 for d in dims):
        raise BackendError(
            f"output {name} has a data-dependent shape {list(dims)}; edgedet needs fixed output shapes (use "
            "an EfficientNMS-style export with a fixed max detections)"
        )
    if dims and dims[0] == max_batch:
        return Binding(name, dims[1:], dtype)
    if max_batch == 1:
        return Binding(name, dims, dtype, batched=False)
    raise BackendError(
        f"output {name} has shape {list(dims)}, which does not start with the batch axis ({max_batch}): "
        "edgedet cannot split it per frame; use backend.max_batch 1 or export a batch-major output"
    )


def _select_profile(context: trt.IExecutionContext, index: int, stream: int, path: Path) -> None:
    # the bindings raise RuntimeError when TensorRT refuses (pyCore.cpp); they never return False
    try:
        context.set_optimization_profile_async(index, stream)
    except RuntimeError as exc:
        raise BackendError(
            f"engine {path.name}: TensorRT cannot select optimization profile {index} ({exc})"
        ) from exc


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
