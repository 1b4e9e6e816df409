"""`edgedet detect PATH`: run the model on an image or a video, print the same JSON messages the
daemon publishes (one per line), optionally write an annotated copy.

With ``--track`` the frames also go through the tracking stage (with the zones and lines the config gives
the camera): detections carry track ids, object events, zone occupancy and line counts are printed too,
and the annotated copy shows ids, zones and lines."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from edgedet.app import load_model_stage
from edgedet.assets import DEMO_CONFIG
from edgedet.config import Config, load_config
from edgedet.errors import SourceError, require
from edgedet.models.detector import ImageDetector
from edgedet.publish import messages as m
from edgedet.publish.messages import build_detections_message
from edgedet.sources.suffixes import IMAGE_SUFFIXES
from edgedet.tracking import draw as paint
from edgedet.tracking.config import CameraZones
from edgedet.tracking.stage import Tracking
from edgedet.tracking.values import TrackingUpdate
from edgedet.tracking.zones import scale_points
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
    """Boxes with "class score" labels, one colour per class (per track when tracked)."""
    out = image.copy()
    for det in detections:
        if det.track_id is not None:
            color = paint.color_for(det.track_id)
            text = f"{det.class_name} #{det.track_id} {det.score:.2f}"
        else:
            color = paint.color_for(1000 + det.class_id)
            text = f"{det.class_name} {det.score:.2f}"
        paint.box(out, (det.x1, det.y1, det.x2, det.y2), color, text)
    return out


class SceneOverlay:
    """Zones (with their occupancy) and lines (with their counts) of one camera, kept up to date from
    the tracking stage's output and drawn under the boxes."""

    def __init__(self, scene: CameraZones) -> None:
        self.scene = scene
        self.occupancy: Dict[str, int] = {}
        self.counts: Dict[str, Tuple[int, int]] = {}

    def update(self, up: TrackingUpdate) -> None:
        for occ in up.occupancy:
            self.occupancy[occ.zone] = sum(c.count for c in occ.counts)
        for ln in up.lines:
            self.counts[ln.line] = (
                sum(c.crossed_in for c in ln.counts),
                sum(c.crossed_out for c in ln.counts),
            )

    def draw(self, image: np.ndarray) -> None:
        size = (int(image.shape[1]), int(image.shape[0]))
        for zone in self.scene.zones:
            polygon = scale_points(zone.points, self.scene, size)
            paint.zone(image, polygon, f"{zone.name}: {self.occupancy.get(zone.name, 0)}")
        for line in self.scene.lines:
            a, b = scale_points(line.points, self.scene, size)
            n_in, n_out = self.counts.get(line.name, (0, 0))
            paint.line(image, a, b, f"{line.name} in {n_in} / out {n_out}")


def run_detect(args: argparse.Namespace) -> int:
    config = detect_config(args)
    stage = load_model_stage(config)
    detector = ImageDetector(stage.backend, stage.postprocessor, stage.spec, preprocess="cpu")
    writer: Any = None
    camera = args.camera or (config.cameras[0].name if getattr(args, "track", False) else args.path.stem)
    device_id = config.resolved_device_id
    scratch = tempfile.TemporaryDirectory(prefix="edgedet-detect-")  # line counters of this run only
    tracking: Optional[Tracking] = None
    overlay: Optional[SceneOverlay] = None
    if getattr(args, "track", False):
        no_snapshots = config.tracking.snapshots.model_copy(update={"enabled": False})
        tracking_cfg = config.tracking.model_copy(update={"enabled": True, "snapshots": no_snapshots})
        tracking = Tracking(tracking_cfg, config.mqtt.events, Path(scratch.name))
        overlay = SceneOverlay(config.tracking.cameras.get(camera, CameraZones()))
    started = time.time()
    try:
        for index, frame, fps in iter_frames(args.path, args.max_frames):
            now_mono = time.monotonic()
            # video time, not processing time: dwell and stationary timing follow the clip
            now_wall = started + index / fps if fps > 0 else time.time()
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
            extra: List[Dict[str, Any]] = []
            if tracking is not None and overlay is not None:
                update = tracking.process(result)
                result = update.result or result
                overlay.update(update)
                extra = tracking_messages(update, device_id, result.capture_time)
            message = build_detections_message(result, stage.model_info, device_id=device_id, seq=index)
            for msg in [message, *extra]:
                print(json.dumps(msg, separators=(",", ":")), flush=True)
            if args.output is not None:
                picture = frame.copy()
                if overlay is not None:
                    overlay.draw(picture)
                writer = _write(args.output, draw(picture, result.detections), writer, fps)
    finally:
        if writer is not None and not isinstance(writer, bool):
            writer.release()
        detector.close()
        stage.close()
        scratch.cleanup()
    if args.output is not None:
        log.info("annotated output written to %s", args.output)
    return 0


def tracking_messages(update: TrackingUpdate, device_id: str, t: float) -> List[Dict[str, Any]]:
    """The object, occupancy and line-count messages of one frame, as the daemon would publish them
    (numbered 1: outside the daemon there is no sequence store)."""
    env = m.Envelope(device_id, 1, "local", t)
    out = [m.build_object_event(e, env) for e in update.objects]
    out += [m.build_occupancy(o, env) for o in update.occupancy]
    out += [m.build_line_count(c, env) for c in update.lines]
    return out


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
