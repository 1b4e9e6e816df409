"""The factory's entry point: the prebuilt engine, else the cached one, else a build, else the last
engine that loaded (when a build fails)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from edgedet.backends.tensorrt.build import build_engine, mark_good
from edgedet.backends.tensorrt.cache import EngineCache
from edgedet.backends.tensorrt.engine import TrtBackend, load_engine
from edgedet.backends.tensorrt.request import prepare_request
from edgedet.backends.tensorrt.runtime import Progress, expand_path, require_tensorrt, runtime_identity
from edgedet.cudart import open_runtime
from edgedet.errors import BackendError
from edgedet.types import InputSpec

if TYPE_CHECKING:
    from edgedet.backends.config import TensorRTBackend as TensorRTConfig

log = logging.getLogger(__name__)


def open_tensorrt_backend(
    cfg: TensorRTConfig,
    model_path: Path,
    state_dir: Path,
    *,
    input_spec: Optional[InputSpec] = None,
    input_size: Optional[Tuple[int, int]] = None,
    resolve: Optional[Callable[[str], Path]] = None,
    progress: Optional[Progress] = None,
) -> TrtBackend:
    """The engine for ``model_path`` with ``cfg``: the prebuilt ``cfg.engine``, else the cached engine
    whose key matches, else a new build (kept in ``state_dir/engines``). A failed build falls back to the
    last engine that loaded for this model and precision, if this TensorRT and GPU can run it."""
    version = require_tensorrt()
    resolve = resolve or expand_path
    runtime = open_runtime(cfg.device)
    if cfg.engine:
        engine_path = resolve(cfg.engine)
        if not engine_path.is_file():
            raise BackendError(f"backend.engine {engine_path} does not exist")
        return load_engine(engine_path, cfg, runtime)

    ident = runtime_identity(runtime, version)
    model_path = Path(model_path)
    request = prepare_request(cfg, model_path, ident, resolve, input_size, input_spec)
    cache = EngineCache(state_dir)
    name = model_path.name
    path = cache.find(request.key, name)
    key = request.key
    if path is not None:
        try:
            backend = load_engine(path, cfg, runtime)
            mark_good(cache, key, name, path)
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
    mark_good(cache, key, name, path)
    return backend
