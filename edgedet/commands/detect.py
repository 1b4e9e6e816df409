"""`edgedet detect PATH`: run the model on an image or a video, print the same JSON messages the
daemon publishes (one per line), optionally write an annotated copy."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

import numpy as np

from edgedet.app import load_model_stage
from edgedet.config import DEMO_CONFIG, Config, load_config
from edgedet.errors import SourceError, require
from edgedet.models.detector import ImageDetector
from edgedet.publish.messages import build_detections_message
from edgedet.sources.suffixes import IMAGE_SUFFIXES
from edgedet.types import Detection, DetectionResult

log = logging.getLogger(__name__)


def detect_config(args: argparse.Namespace) -> Config:
    """The model and backend settings: from --config when given, else the bundled demo model."""
    config = load_config(args.config) if args.config is not None else load_config(DEMO_CONFIG)
    updates: dict = {}
    if args.model is not None:
        updates["path"] = str(args.model.resolve())
    if args.score is not None:
        updates["score_threshold"] = args.score
    if updates:
        config = config.model_copy(update={"model": config.model.model_copy(update=updates)})
    return config


def iter_frames(path: Path, max_frames: Optional[int]) -> Iterator[Tuple[int, np.ndarray, float]]:
    cv2: Any = require("cv2", "cv", "reading images and videos")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path))
        if image is None:
            raise SourceError(f"{path}: not a readable image")
        yield 0, image, 0.0
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: not a readable video (OpenCV could not open it)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    index = 0
    try:
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield index, frame, fps
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise SourceError(f"{path}: the video has no readable frame")


def draw(image: np.ndarray, detections: Tuple[Detection, ...]) -> np.ndarray:
    cv2: Any = require("cv2", "cv", "annotating images")
    out = image.copy()
    for det in detections:
        color = _color(det.class_id)
        p1, p2 = (int(det.x1), int(det.y1)), (int(det.x2), int(det.y2))
        cv2.rectangle(out, p1, p2, color, 2)
        label = f"{det.class_name} {det.score:.2f}"
        cv2.putText(
            out, label, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA
        )
    return out


def _color(class_id: int) -> Tuple[int, int, int]:
    rng = np.random.default_rng(class_id)  # stable colour per class
    return tuple(int(c) for c in rng.integers(64, 256, size=3))  # type: ignore[return-value]


def run_detect(args: argparse.Namespace) -> int:
    config = detect_config(args)
    stage = load_model_stage(config)
    detector = ImageDetector(stage.backend, stage.postprocessor, stage.spec, preprocess="cpu")
    writer: Any = None
    camera = args.path.stem
    device_id = config.resolved_device_id
    try:
        for index, frame, fps in iter_frames(args.path, args.max_frames):
            now_wall, now_mono = time.time(), time.monotonic()
            detections, letterbox = detector.detect_with_letterbox(frame)
            timings = detector.timings_ms
            result = DetectionResult(
                camera=camera,
                seq=index,
                capture_time=now_wall,
                capture_monotonic=now_mono,
                source_width=letterbox.source_width,
                source_height=letterbox.source_height,
                detections=tuple(detections),
                timings_ms={"infer": timings["infer"], "decode": timings["postprocess"]},
            )
            message = build_detections_message(result, stage.model_info, device_id=device_id, seq=index)
            print(json.dumps(message, separators=(",", ":")), flush=True)
            if args.output is not None:
                writer = _write(args.output, draw(frame, result.detections), writer, fps)
    finally:
        if writer is not None and not isinstance(writer, bool):
            writer.release()
        detector.close()
        stage.close()
    if args.output is not None:
        log.info("annotated output written to %s", args.output)
    return 0


def _write(path: Path, image: np.ndarray, writer: Any, fps: float) -> Any:
    cv2: Any = require("cv2", "cv", "writing annotated output")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not cv2.imwrite(str(path), image):
            raise SourceError(f"{path}: cannot write the annotated image")
        return True
    if writer is None:
        h, w = image.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 10.0, (w, h))
        if not writer.isOpened():
            raise SourceError(f"{path}: cannot open a video writer (use .mp4 or .avi)")
    writer.write(image)
    return writer
