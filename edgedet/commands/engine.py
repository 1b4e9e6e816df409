"""`edgedet build-engine`: build (or find in the cache) the TensorRT engine for a config or a model.

The daemon does the same on first start when no cached engine matches; running it ahead (e.g. while
provisioning a device) keeps the first start short.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict

from edgedet.backends.config import TensorRTBackend
from edgedet.backends.tensorrt import build_engine
from edgedet.config import load_config
from edgedet.errors import ConfigError
from edgedet.models.config import ModelConfig
from edgedet.models.postprocess import resolve_input_spec

log = logging.getLogger(__name__)


def run_build_engine(args: argparse.Namespace) -> int:
    if args.config is not None:
        config = load_config(args.config)
        if not isinstance(config.backend, TensorRTBackend):
            raise ConfigError(f"{args.config}: backend.type is {config.backend.type!r}, not 'tensorrt'")
        cfg, model_cfg = config.backend, config.model
        model = args.model or config.resolve_path(config.model.path)
        state_dir = args.state_dir or config.state_path
        resolve = config.resolve_path
    else:
        if args.model is None:
            raise ConfigError("build-engine needs --config FILE or --model MODEL.onnx")
        cfg = TensorRTBackend(type="tensorrt")
        model_cfg = ModelConfig(path=str(args.model))
        model = args.model
        state_dir = args.state_dir or Path("~/.local/state/edgedet").expanduser()
        resolve = _expand
    updates: Dict[str, Any] = {}
    for flag, key in (("precision", "precision"), ("max_batch", "max_batch"), ("dla_core", "dla_core")):
        if getattr(args, flag) is not None:
            updates[key] = getattr(args, flag)
    for flag, key in (("calibration", "calibration"), ("float_layers", "float_layers")):
        if getattr(args, flag) is not None:
            updates[key] = str(Path(getattr(args, flag)).resolve())
    if updates:
        cfg = TensorRTBackend.model_validate({**cfg.model_dump(), **updates})
    path = build_engine(
        Path(model),
        cfg,
        Path(state_dir),
        input_spec=resolve_input_spec(model_cfg, Path(model)),
        input_size=model_cfg.input_size,
        progress=print,
        force=args.force,
        resolve=resolve,
    )
    print(f"engine: {path}")
    return 0


def _expand(path: str) -> Path:
    return Path(path).expanduser().resolve()
