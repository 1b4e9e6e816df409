"""`edgedet eval`: COCO mAP of one model, or of several variants side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from edgedet.assets import DEMO_MODEL
from edgedet.backends import open_backend
from edgedet.commands.progress import progress_printer
from edgedet.config import load_config
from edgedet.errors import ConfigError
from edgedet.models.postprocess import resolve_input_spec
from edgedet.precision.compare import run_compare_command
from edgedet.precision.evaluate import evaluate


def run_eval(args: argparse.Namespace) -> int:
    models: List[Path] = args.model or [_demo_model()]
    if (args.images is None) != (args.annotations is None):
        raise ConfigError("--images and --annotations go together (a folder and its COCO annotation file)")
    if args.images is None and args.agreement_video is None:
        raise ConfigError("give --images and --annotations (labelled data) or --agreement-video (unlabelled)")
    if len(models) > 1 or args.agreement_video is not None or args.report is not None:
        return run_compare_command(args, models)
    return _eval_one(args, models[0])


def _demo_model() -> Path:

    return DEMO_MODEL


def _eval_one(args: argparse.Namespace, model: Path) -> int:
    model_cfg, backend = None, None
    config_path: Optional[Path] = getattr(args, "config", None)
    if config_path is not None:
        config = load_config(config_path)
        model_cfg = config.model
        if config.backend.type != "onnxruntime":
            backend = open_backend(
                config.backend,
                model,
                config.state_path,
                input_spec=resolve_input_spec(config.model, model),
                input_size=config.model.input_size,
            )
    result = evaluate(
        model,
        args.images,
        args.annotations,
        model_cfg=model_cfg,
        backend=backend,
        threads=args.threads,
        limit=args.limit,
        progress=progress_printer(f"eval {model.name}"),
    )
    if getattr(args, "json", False):
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.summary)
    print(
        f"{model.name} ({result.precision}, {result.family}): mAP@0.5:0.95 {result.map50_95:.4f}  "
        f"mAP@0.5 {result.map50:.4f}  on {result.images} images; "
        f"median inference {result.median_infer_ms:.1f} ms, end to end {result.median_total_ms:.1f} ms"
    )
    return 0
