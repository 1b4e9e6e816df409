"""Inference backends: a model in, raw output tensors out. Decoding is not a backend's job."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from edgedet.errors import BackendError, EdgedetError

if TYPE_CHECKING:
    from edgedet.backends.base import Backend
    from edgedet.backends.config import BackendConfig
    from edgedet.types import InputSpec


def open_backend(
    cfg: BackendConfig,
    model_path: Path,
    state_dir: Path,
    *,
    input_spec: Optional[InputSpec] = None,
    input_size: Optional[Tuple[int, int]] = None,
    resolve: Optional[Callable[[str], Path]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Backend:
    """Load ``model_path`` with the backend named by ``cfg.type``; only that backend's module is imported.

    ``state_dir`` is where backends keep what they build (TensorRT engines, calibration caches);
    ``input_spec`` is the model's preprocessing, resolved by the caller (TensorRT keys its engines by it
    and calibrates INT8 with it: edgedet.models.postprocess.resolve_input_spec); ``input_size`` fixes a
    dynamic image size; ``resolve`` maps paths in the config (relative to the config file) to real paths.
    """
    if cfg.type == "onnxruntime":
        from edgedet.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, threads=cfg.threads, providers=cfg.providers)
    if cfg.type == "tensorrt":
        from edgedet.backends.tensorrt import (  # type: ignore[import-not-found,unused-ignore]
            open_tensorrt_backend,
        )

        return open_tensorrt_backend(  # type: ignore[no-any-return,unused-ignore]
            cfg,
            model_path,
            state_dir,
            input_spec=input_spec,
            input_size=input_size,
            resolve=resolve,
            progress=progress,
        )
    if cfg.type == "python":
        return _open_plugin(cfg.factory, model_path, state_dir, cfg.options)
    raise ValueError(f"unknown backend type {cfg.type!r}")


def _open_plugin(factory: str, model_path: Path, state_dir: Path, options: Dict[str, Any]) -> Backend:
    module_name, _, attr = factory.partition(":")
    try:
        make = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend factory {factory!r} cannot be imported: {exc}") from exc
    try:
        return make(model_path=model_path, state_dir=state_dir, **options)  # type: ignore[no-any-return]
    except EdgedetError:
        raise
    except Exception as exc:
        raise BackendError(f"backend factory {factory!r} failed: {exc}") from exc
