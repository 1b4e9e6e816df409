"""The `edgedet` command line: argument parsing and dispatch only; work happens in the modules.

Every user-facing failure is an EdgedetError: printed as one line (or one line per config problem)
with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional

from edgedet import __version__
from edgedet.commands.bench import run_bench
from edgedet.commands.detect import run_detect
from edgedet.commands.engine import run_build_engine
from edgedet.commands.evaluate import run_eval
from edgedet.commands.install import run_install_service
from edgedet.commands.run import run_daemon
from edgedet.commands.status import run_status
from edgedet.commands.watch import run_watch
from edgedet.config import load_config
from edgedet.errors import ConfigError, EdgedetError
from edgedet.precision.cli_args import add_quantize_args, run_quantize
from edgedet.service.logging_setup import configure_logging
from edgedet.service.preflight import check_references, errors


def cmd_run(args: argparse.Namespace) -> int:
    return run_daemon(args.config, duration=args.duration, log_level=args.log_level)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    # the files, devices and OpenCV build the config points to
    findings = [] if args.no_files else check_references(config)
    for finding in findings:
        print(f"{args.file}: {finding}", file=sys.stderr)
    if errors(findings):
        return 1
    cams = ", ".join(f"{c.name} ({c.source.type})" for c in config.cameras)
    print(f"{args.file}: OK — model {config.model.path}, backend {config.backend.type}, cameras: {cams}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgedet", description="Real-time object detection daemon for NVIDIA Jetson (and CPUs)."
    )
    parser.add_argument("--version", action="version", version=f"edgedet {__version__}")
    parser.add_argument(
        "--log-level", default=None, choices=["debug", "info", "warning", "error"], help="override log level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("run", cmd_run, "run the daemon (without --config: the built-in demo on the bundled clip)")
    p.add_argument("--config", "-c", type=Path, default=None, help="YAML config file")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")

    p = add("check-config", cmd_check_config, "validate a config file; print every problem with its line")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the file only, not the model/video/TLS files it points to (e.g. before deploying)",
    )

    p = add("detect", run_detect, "detect objects in an image or video; print JSON, optionally annotate")
    p.add_argument("path", type=Path, help="image or video file")
    p.add_argument("--config", "-c", type=Path, default=None, help="take model/backend settings from here")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled YOLOX-Nano)")
    p.add_argument("--output", "-o", type=Path, default=None, help="write an annotated image or video here")
    p.add_argument("--score", type=float, default=None, help="score threshold")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    p.add_argument(
        "--track", action="store_true", help="track objects: ids, object events, zones and lines (tracking:)"
    )
    p.add_argument(
        "--camera", default=None, help="whose zones and lines to use with --track (default: the first camera)"
    )

    p = add("eval", run_eval, "COCO mAP of a model (or several variants side by side) on labelled images")
    p.add_argument("--model", type=Path, action="append", default=None, help="ONNX model; repeat to compare")
    p.add_argument("--images", type=Path, default=None, help="image folder (with --annotations)")
    p.add_argument("--annotations", type=Path, default=None, help="COCO instances JSON")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--agreement-video", type=Path, default=None, help="also score agreement with the first model"
    )
    p.add_argument("--report", type=Path, default=None, help="write the comparison table (Markdown) here")
    p.add_argument("--config", "-c", type=Path, default=None, help="model settings and backend from here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("watch", run_watch, "subscribe to a broker and pretty-print what edgedet publishes")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edgedet")
    p.add_argument("--username", default=None)
    p.add_argument("--check", action="store_true", help="report gaps, duplicates and reordering per camera")
    p.add_argument("--validate", action="store_true", help="validate each message against its JSON Schema")
    p.add_argument("--share", default=None, metavar="GROUP", help="join an MQTT 5 shared subscription")
    p.add_argument("--topic", default="#", help="topic filter under <prefix>/ (default: everything)")
    p.add_argument("--config", "-c", type=Path, default=None, help="broker settings (TLS, user) from here")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--count", type=int, default=None, help="stop after this many messages")

    p = add("status", run_status, "the running daemon's status (its HTTP /status endpoint) as a table")
    p.add_argument(
        "--url", default=None, help="the daemon's HTTP address (default: from --config, else :9464)"
    )
    p.add_argument("--config", "-c", type=Path, default=None, help="take the address from http.listen here")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")

    p = add("bench", run_bench, "benchmarks: pipeline vs sequential vs inference alone (and more)")
    p.add_argument("--video", type=Path, default=None, help="video (default ../shared 1080p clip, else demo)")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--instances", type=int, default=2, help="parallel inference workers in (c)")
    p.add_argument(
        "--what",
        choices=["pipeline", "cameras", "outbox", "telemetry", "preprocess", "http", "all"],
        default="pipeline",
        help="which benchmark",
    )
    p.add_argument("--json", action="store_true", help="print figures as JSON")
    p.add_argument("--cameras", default="1,2,4,8", help="--what cameras: camera counts to run")
    p.add_argument("--seconds", type=float, default=20.0, help="--what cameras: measured seconds per count")
    p.add_argument("--pace", choices=["fast", "realtime"], default="fast", help="--what cameras: file pacing")

    p = add("build-engine", run_build_engine, "build (or rebuild) the TensorRT engine for a config or model")
    p.add_argument("--config", "-c", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "best"], default=None)
    p.add_argument("--calibration", type=Path, default=None, help="image folder or video for INT8")
    p.add_argument("--float-layers", type=Path, default=None, help="layers kept in float (from quantize)")
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--dla-core", type=int, default=None)
    p.add_argument("--force", action="store_true", help="rebuild even when a cached engine matches")

    p = add("quantize", run_quantize, "INT8 Q/DQ (sensitivity-guided mixed precision) and FP16 ONNX models")
    add_quantize_args(p)

    p = add("install-service", run_install_service, "install the systemd unit, user and directories")
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this root (packaging)")
    p.add_argument("--user", default="edgedet")
    p.add_argument("--config", type=Path, default=None, help="config to install if none exists")
    p.add_argument("--dry-run", action="store_true", help="print what would be done")
    p.add_argument("--enable", action="store_true", help="also systemctl enable --now edgedet")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        sys.exit(2)
    configure_logging(args.log_level or "info")
    try:
        code = args.handler(args)
    except ConfigError as exc:
        print(f"edgedet: {exc}", file=sys.stderr)
        code = 2
    except EdgedetError as exc:
        print(f"edgedet: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
