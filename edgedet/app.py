"""Composition root: builds the stages from a Config, starts them in order, stops them in reverse.

No processing logic lives here; see sources/, preprocess/, backends/, models/, pipeline/, publish/.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import numpy as np

from edgedet.backends import open_backend
from edgedet.config import Config
from edgedet.errors import EdgedetError
from edgedet.models.postprocess import build_postprocessor, input_spec_for, resolve_input_spec
from edgedet.pipeline.inference import FrameBoard, InferenceBatch, InferenceWorker, PostWorker
from edgedet.pipeline.stats import PipelineStats
from edgedet.preprocess import make_preprocessor
from edgedet.publish.messages import ModelInfo
from edgedet.runtime.worker import Worker
from edgedet.sources import open_reader
from edgedet.sources.capture import CaptureState, CaptureStatus, CaptureWorker
from edgedet.sources.config import FileSource
from edgedet.tracking.stage import Tracking
from edgedet.tracking.values import TrackingUpdate
from edgedet.types import DetectionResult, InputSpec

if TYPE_CHECKING:
    from edgedet.backends.base import Backend
    from edgedet.models.postprocess import PostProcessor
    from edgedet.publish.mqtt import MqttPublisher
    from edgedet.sources.base import FrameReader

log = logging.getLogger(__name__)


@dataclass
class ModelStage:
    """The loaded backend with everything derived from it (input spec, decoder, preprocessing kind)."""

    backend: Backend
    postprocessor: PostProcessor
    spec: InputSpec
    preprocess_kind: str
    model_info: ModelInfo
    # further sessions of the same model for parallel inference workers (backend.instances)
    extra_backends: List[Backend] = field(default_factory=list)

    def close(self) -> None:
        for backend in [self.backend, *self.extra_backends]:
            backend.close()


def load_model_stage(config: Config) -> ModelStage:
    """Open the backend, pick the decoder and input spec, and prove a first inference works."""
    model_path = config.resolve_path(config.model.path)
    # TensorRT keys its engines by the preprocessing (and calibrates INT8 with it)
    wanted = resolve_input_spec(config.model, model_path) if config.backend.type == "tensorrt" else None

    def open_one() -> Backend:
        return open_backend(
            config.backend,
            model_path,
            config.state_path,
            input_spec=wanted,
            input_size=config.model.input_size,
            resolve=config.resolve_path,
            progress=lambda line: log.info("%s", line),
        )

    backend = open_one()
    extra: List[Backend] = []
    try:
        post = build_postprocessor(config.model, backend, base_dir=config.resolve_path("."))
        spec = input_spec_for(config.model, backend, post.family)
        kind = _preprocess_kind(config)
        warm = np.zeros((spec.batch, 3, spec.height, spec.width), dtype=spec.dtype)
        backend.infer({spec.name: warm})  # the first inference: READY is only sent after it succeeded
        info = ModelInfo(
            name=model_path.name,
            family=post.family,
            precision=backend.precision,
            backend=backend.name,
            input_width=spec.width,
            input_height=spec.height,
        )
        for _ in range(getattr(config.backend, "instances", 1) - 1):
            extra.append(open_one())
        return ModelStage(backend, post, spec, kind, info, extra)
    except BaseException:
        for opened in [backend, *extra]:
            opened.close()
        raise


def _preprocess_kind(config: Config) -> str:
    wanted = config.preprocess.type
    if wanted != "auto":
        return wanted
    if config.backend.type == "tensorrt":
        try:
            import pycuda.driver  # noqa: F401
        except ImportError:
            return "cpu"
        return "cuda"
    return "cpu"


@dataclass
class Pipeline:
    """Every running stage of the daemon, and what the supervisor may do with them.

    Cameras come and go while inference runs (a reload, a crashed capture thread): ``replace_capture``
    and ``remove_capture`` are the only ways to do that, so a camera's slot, counters and thread always
    change together.
    """

    config: Config
    model: ModelStage
    board: FrameBoard
    inference: List[InferenceWorker]
    post: PostWorker
    captures: Dict[str, CaptureWorker] = field(default_factory=dict)
    publisher: Optional[MqttPublisher] = None
    stats: PipelineStats = field(default_factory=PipelineStats)
    extra_sinks: List[Callable[[DetectionResult], None]] = field(default_factory=list)
    tracking: Optional[Tracking] = None
    # see every tracking update after the publisher (metrics of tracks, zones and lines)
    tracking_sinks: List[Callable[[TrackingUpdate], None]] = field(default_factory=list)

    def workers(self) -> Dict[str, Worker]:
        out: Dict[str, Worker] = {w.name: w for w in self.inference}
        out["postprocess"] = self.post
        out.update({f"capture-{name}": w for name, w in self.captures.items()})
        return out

    # -- cameras -------------------------------------------------------------------------------
    def replace_capture(self, camera: str, join_timeout: float = 5.0) -> CaptureWorker:
        """(Re)start ``camera``'s capture stage from ``self.config``: the old thread (if any) is stopped
        and its slot freed, a fresh one is built and started. The new one retries a source that cannot
        be opened yet, forever with backoff (the camera shows as down until it comes)."""
        self._stop_capture(camera, join_timeout)
        worker = build_capture(self.config, camera, self, retry_first_open=True)
        self.captures[camera] = worker
        worker.start()
        return worker

    def remove_capture(self, camera: str, join_timeout: float = 5.0) -> None:
        """Stop ``camera``'s capture stage and forget it (its slot, its counters)."""
        self._stop_capture(camera, join_timeout)
        self.stats.forget(camera)

    def _stop_capture(self, camera: str, join_timeout: float) -> None:
        worker = self.captures.pop(camera, None)
        if worker is not None:
            worker.stop()
            if not worker.join(join_timeout):
                log.warning("%s did not stop within %.1f s; leaving it", worker.name, join_timeout)
        self.board.remove(camera)

    def capture_statuses(self) -> Dict[str, CaptureStatus]:
        return {name: w.status() for name, w in list(self.captures.items())}

    def frames_dropped(self, camera: str) -> int:
        """Frames of ``camera`` replaced in the latest-frame slot before inference took them."""
        return self.board.dropped(camera)

    def set_max_fps(self, fps: Optional[float]) -> None:
        """Cap every camera's processed frame rate (the thermal policy); None lifts the cap."""
        for worker in list(self.captures.values()):
            worker.set_max_fps(fps)

    # -- progress ------------------------------------------------------------------------------
    def drained(self) -> bool:
        """No frame is waiting for inference, being inferred or waiting for post-processing."""
        return self.board.pending() == 0 and self.board.in_flight() == 0 and self.post.inbox.empty()

    def all_sources_ended(self) -> bool:
        """Every camera is a file played once that has ended, and every frame read was published."""
        if not self.captures:
            return False
        if any(w.state != CaptureState.ENDED for w in list(self.captures.values())):
            return False
        return self.drained()


def build_capture(
    config: Config, camera_name: str, pipeline: Pipeline, retry_first_open: Optional[bool] = None
) -> CaptureWorker:
    """One camera's capture thread.

    ``retry_first_open``: keep retrying a source that cannot be opened at start (a camera that is not up
    yet) rather than failing. By default True for every source but files: a file that cannot be read
    does not heal, so it is a start-up error.
    """
    camera = next(c for c in config.cameras if c.name == camera_name)
    source = camera.source
    if isinstance(source, FileSource):  # relative paths are relative to the config file
        source = source.model_copy(update={"path": str(config.resolve_path(source.path))})
    if retry_first_open is None:
        retry_first_open = not isinstance(source, FileSource)
    preprocessor = make_preprocessor(
        pipeline.model.preprocess_kind,
        pipeline.model.spec,
        device=getattr(config.backend, "device", 0),
        cache_dir=config.cache_path,
    )
    slot = pipeline.board.add(camera.name)

    def reader_factory() -> FrameReader:
        return open_reader(source)

    keep_image = pipeline.tracking is not None and pipeline.tracking.wants_images  # for snapshots
    return CaptureWorker(
        camera, reader_factory, preprocessor, slot, keep_image=keep_image, retry_first_open=retry_first_open
    )


def build_pipeline(
    config: Config,
    publisher: Optional[MqttPublisher] = None,
    extra_sinks: Optional[List[Callable[[DetectionResult], None]]] = None,
    tracking_sinks: Optional[List[Callable[[TrackingUpdate], None]]] = None,
) -> Pipeline:
    """Load the model and wire capture -> inference -> post-processing -> sinks (nothing started)."""
    model = load_model_stage(config)
    board = FrameBoard()
    handoff: queue.Queue[InferenceBatch] = queue.Queue(maxsize=2)
    # a dynamic batch axis reports None in the spec; the backend knows its real maximum
    engine_batch = int(getattr(model.backend, "max_batch", model.spec.batch) or 1)
    max_batch = max(1, min(len(config.cameras), engine_batch))
    backends = [model.backend, *model.extra_backends]
    inference = [
        InferenceWorker(board, b, handoff, max_batch=max_batch, name="inference" + (f"-{i}" if i else ""))
        for i, b in enumerate(backends)
    ]
    post = PostWorker(handoff, model.postprocessor, [], board=board)
    pipeline = Pipeline(config, model, board, inference, post)
    pipeline.publisher = publisher
    pipeline.extra_sinks = list(extra_sinks or [])
    pipeline.tracking_sinks = list(tracking_sinks or [])
    pipeline.tracking = Tracking(config.tracking, config.mqtt.events, config.state_path)
    pipeline.post.sinks.append(_result_sink(pipeline))
    for camera in config.cameras:
        if camera.enabled:
            pipeline.captures[camera.name] = build_capture(config, camera.name, pipeline)
    return pipeline


def _result_sink(pipeline: Pipeline) -> Callable[[DetectionResult], None]:
    def sink(result: DetectionResult) -> None:
        start = time.monotonic()
        if pipeline.tracking is not None:
            update = pipeline.tracking.process(result)
            result = update.result or result
            result.timings_ms["track"] = (time.monotonic() - start) * 1000.0
            if pipeline.publisher is not None:
                pipeline.publisher.publish_tracking(update, pipeline.model.model_info)
            for tracking_sink in pipeline.tracking_sinks:
                tracking_sink(update)
        elif pipeline.publisher is not None:
            pipeline.publisher.publish_detections(result, pipeline.model.model_info)
        for extra in pipeline.extra_sinks:
            extra(result)
        done = time.monotonic()
        result.timings_ms["publish"] = (done - start) * 1000.0
        pipeline.stats.record(result, done)

    return sink


def expire_tracking(pipeline: Pipeline, now: float) -> None:
    """Presence `cleared` for cameras that stopped sending frames (call now and then)."""
    if pipeline.tracking is None:
        return
    update = pipeline.tracking.expire(now)
    if pipeline.publisher is not None:
        pipeline.publisher.publish_tracking(update, pipeline.model.model_info)
    for tracking_sink in pipeline.tracking_sinks:
        tracking_sink(update)


def start_pipeline(pipeline: Pipeline) -> None:
    """Start consumers before producers so that no frame waits for a stage that is not there yet."""
    pipeline.post.start()
    for inference in pipeline.inference:
        inference.start()
    for capture in pipeline.captures.values():
        capture.start()


def stop_pipeline(pipeline: Pipeline, timeout: float) -> None:
    """Stop capture first, let in-flight frames finish, then the inference stages; free the model."""
    deadline = time.monotonic() + timeout
    for worker in pipeline.captures.values():
        worker.stop()
    for worker in pipeline.captures.values():
        worker.join(max(0.1, deadline - time.monotonic()))
    # drain: whatever is already in a slot or the hand-off queue is still inferred and published
    while not pipeline.drained() and time.monotonic() < deadline:
        if not pipeline.post.alive or not any(w.alive for w in pipeline.inference):
            break
        time.sleep(0.02)
    for inference in pipeline.inference:
        inference.stop()
    for inference in pipeline.inference:
        inference.join(max(0.1, deadline - time.monotonic()))
    pipeline.post.stop()
    pipeline.post.join(max(0.1, deadline - time.monotonic()))
    if any(w.alive for w in pipeline.inference):
        log.warning("inference did not stop within %.1f s; leaving the model loaded", timeout)
        return
    pipeline.model.close()


def describe_failure(name: str, exc: BaseException) -> str:
    if isinstance(exc, EdgedetError):
        return f"{name}: {exc}"
    return f"{name}: unexpected {type(exc).__name__}: {exc}"
