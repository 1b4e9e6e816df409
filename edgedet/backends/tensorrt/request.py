"""What to build: the ONNX and switches for this TensorRT version, and the key naming the engine.

Everything an engine depends on goes into its EngineKey (see cache.py), decided before TensorRT is
called, so a cache hit needs no parsing at all.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from edgedet.backends.onnx_file import has_dynamic_input, read_model_io
from edgedet.backends.tensorrt.cache import EngineKey, file_sha256, text_digest
from edgedet.backends.tensorrt.layers import LayerOverrides, load_layer_list, overrides_digest_items
from edgedet.backends.tensorrt.plan import BuildPlan, plan_build
from edgedet.backends.tensorrt.runtime import RuntimeIdentity, trt_version_tuple
from edgedet.errors import BackendError, ModelError, SourceError
from edgedet.sources.calibration import check_source, list_images
from edgedet.types import InputSpec

if TYPE_CHECKING:
    from edgedet.backends.config import TensorRTBackend as TensorRTConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EngineRequest:
    model: Path  # model.path: names the engine files
    plan: BuildPlan
    key: EngineKey
    overrides: LayerOverrides
    calibration: Optional[Path]
    input_spec: Optional[InputSpec]


def prepare_request(
    cfg: TensorRTConfig,
    model_path: Path,
    ident: RuntimeIdentity,
    resolve: Callable[[str], Path],
    input_size: Optional[Tuple[int, int]],
    input_spec: Optional[InputSpec],
) -> EngineRequest:
    overrides: LayerOverrides = load_layer_list(resolve(cfg.float_layers)) if cfg.float_layers else {}
    major, minor = trt_version_tuple(ident.trt_version)
    plan = plan_build(
        cfg.precision,
        major,
        model_path,
        qdq_model=resolve(cfg.qdq_model) if cfg.qdq_model else None,
        fp16_model=resolve(cfg.fp16_model) if cfg.fp16_model else None,
        has_float_layers=bool(overrides),
        trt_minor=minor,
        dla_core=cfg.dla_core,
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
        if input_spec is None:
            raise BackendError(
                "implicit INT8 calibration needs the model's preprocessing (input_spec) to prepare the "
                "calibration images like inference does"
            )
        # calibration scales hold only for this data preprocessed this way
        option_parts.append(["calibration", source_id(calibration, cfg.calibration_images)])
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
        profiles=profile_count(plan.onnx, cfg.slots, cfg.dla_core),
        dla_core=cfg.dla_core,
        options=text_digest(option_parts) if option_parts else "",
    )
    return EngineRequest(model_path, plan, key, overrides, calibration, input_spec)


def profile_count(onnx: Path, slots: int, dla_core: Optional[int]) -> int:
    """Optimization profiles the build adds: one per slot for dynamic inputs, none for static ones (a
    static engine runs on any number of contexts, so ``slots`` must not change its key)."""
    if dla_core is not None:
        return 1
    try:
        inputs, _ = read_model_io(onnx)
    except ModelError as exc:
        raise BackendError(str(exc)) from exc
    return slots if has_dynamic_input(inputs) else 0


def source_id(source: Path, limit: int) -> str:
    """A digest identifying the calibration data: file names, sizes and mtimes, and the count used."""
    source = Path(source)
    try:
        check_source(source)
    except SourceError as exc:
        raise BackendError(str(exc)) from exc
    if source.is_dir():
        entries: List[Tuple[str, int, int]] = []
        for f in list_images(source)[:limit]:
            st = f.stat()
            entries.append((f.name, st.st_size, int(st.st_mtime)))
        return text_digest("images", entries, limit)
    st = source.stat()
    return text_digest("video", source.name, st.st_size, int(st.st_mtime), limit)


def spec_id(spec: InputSpec) -> str:
    """A digest of the preprocessing: calibration scales are only valid for the same input transform."""
    return text_digest(
        spec.width,
        spec.height,
        spec.channel_order.value,
        spec.scale,
        list(spec.mean),
        list(spec.std),
        spec.pad_value,
        spec.center,
        spec.dtype,
    )
