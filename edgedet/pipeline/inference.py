"""The inference worker: takes the latest prepared frame of each camera, runs the backend, and hands
the raw outputs on to the post-processing worker, so decoding of one frame overlaps inference of the next.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

import numpy as np

from edgedet.backends.base import Backend
from edgedet.errors import BackendError
from edgedet.runtime.slot import LatestSlot
from edgedet.runtime.worker import Worker
from edgedet.types import Detection, DetectionResult, Letterbox, PreparedFrame

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class InferenceBatch:
    """What the inference worker hands to post-processing: the frames and the backend's raw outputs."""

    frames: List[PreparedFrame]
    outputs: Dict[str, np.ndarray]
    infer_start_monotonic: float
    infer_ms: float


class FrameBoard:
    """The latest-frame slots of every camera, shared by the inference workers.

    It also remembers which frames are being inferred (so results can be published in frame order when
    several workers run in parallel) and when each worker expects to be free (``mark_busy``).
    """

    def __init__(self) -> None:
        self.slots: Dict[str, LatestSlot[PreparedFrame]] = {}
        self._ready = threading.Event()
        self._order: List[str] = []
        self._next = 0
        self._lock = threading.Lock()
        self._inflight: Dict[str, Set[int]] = {}
        self._busy_until: Dict[str, float] = {}

    def add(self, camera: str) -> LatestSlot[PreparedFrame]:
        slot: LatestSlot[PreparedFrame] = LatestSlot(on_drop=_release, on_put=self._ready.set)
        with self._lock:  # cameras come and go on reload while the workers take frames
            self.slots[camera] = slot
            self._order.append(camera)
        return slot

    def remove(self, camera: str) -> None:
        with self._lock:
            slot = self.slots.pop(camera, None)
            if camera in self._order:
                self._order.remove(camera)
        if slot is not None:
            leftover = slot.take_nowait()
            if leftover is not None:
                _release(leftover)

    def dropped(self, camera: str) -> int:
        """Frames of ``camera`` replaced in its slot before inference took them."""
        with self._lock:
            slot = self.slots.get(camera)
        return slot.dropped if slot is not None else 0

    def pending(self) -> int:
        """Prepared frames waiting in the slots for an inference worker."""
        with self._lock:
            slots = list(self.slots.values())
        return sum(len(s) for s in slots)

    def in_flight(self) -> int:
        """Frames taken by an inference worker whose results post-processing has not received yet."""
        with self._lock:
            return sum(len(seqs) for seqs in self._inflight.values())

    def take(self, max_items: int, timeout: float) -> List[PreparedFrame]:
        """Up to ``max_items`` frames from different cameras, round-robin so no camera starves."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._ready.clear()
                taken = self._collect(max_items)
                for frame in taken:
                    self._inflight.setdefault(frame.camera, set()).add(frame.seq)
            if taken:
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._ready.wait(remaining):
                return []

    def done(self, camera: str, seq: int) -> Optional[int]:
        """Frame ``seq`` left inference; returns the oldest frame of the camera still being inferred."""
        with self._lock:
            pending = self._inflight.get(camera)
            if pending is not None:
                pending.discard(seq)
            return min(pending) if pending else None

    def mark_busy(self, worker: str, until: float) -> None:
        """Tell producers when a consumer is next free (LatestSlot.busy_until): the soonest of all
        workers, 0 for an idle one."""
        with self._lock:
            self._busy_until[worker] = until
            soonest = min(self._busy_until.values())
        for slot in list(self.slots.values()):
            slot.busy_until = soonest

    def _collect(self, max_items: int) -> List[PreparedFrame]:
        order = list(self._order)
        taken: List[PreparedFrame] = []
        for i in range(len(order)):
            camera = order[(self._next + i) % len(order)]
            slot = self.slots.get(camera)
            item = slot.take_nowait() if slot is not None else None
            if item is not None:
                taken.append(item)
                if len(taken) >= max_items:
                    break
        if order:
            self._next = (self._next + 1) % len(order)
        if len(taken) < sum(len(s) for s in self.slots.values()):
            self._ready.set()  # more is waiting: don't sleep on the next take
        return taken


def _release(frame: PreparedFrame) -> None:
    if callable(frame.release):
        frame.release()


class InferenceWorker(Worker):
    """Runs the backend on batches of prepared frames; one thread, since backends are not re-entrant.

    With a backend that has ``submit``/``collect`` (TensorRT), up to ``backend.slots`` batches are in
    flight at once so the upload, execution and download of consecutive frames overlap on the GPU;
    device tensors from the CUDA preprocessor are passed as they are, never copied back to the host.
    """

    def __init__(
        self,
        board: FrameBoard,
        backend: Backend,
        out: queue.Queue[InferenceBatch],
        max_batch: int = 1,
        input_name: Optional[str] = None,
        on_thread_start: Optional[Callable[[], None]] = None,
        name: str = "inference",
    ) -> None:
        super().__init__(name)
        self.board = board
        self.backend = backend
        self.out = out
        self.max_batch = max(1, max_batch)
        self.input_name = input_name or backend.inputs[0].name
        self._on_thread_start = on_thread_start
        self.frames_inferred = 0
        self.last_infer_ms: Optional[float] = None
        self._async = callable(getattr(backend, "submit", None)) and callable(
            getattr(backend, "collect", None)
        )
        self._device_feeds = bool(getattr(backend, "accepts_device_tensors", False))
        self._depth = max(1, int(getattr(backend, "slots", 1))) if self._async else 1
        self._inflight: Deque[Tuple[List[PreparedFrame], object, float]] = deque()
        self._expected_s = 0.0  # moving average of one inference, for FrameBoard.mark_busy

    def setup(self) -> None:
        self.board.mark_busy(self.name, 0.0)  # idle: producers need not wait for this worker
        if self._on_thread_start is not None:
            self._on_thread_start()  # e.g. push the CUDA context in this thread

    def step(self) -> None:
        if self._async:
            self._step_async()
            return
        frames = self.board.take(self.max_batch, timeout=0.5)
        if not frames:
            return
        start = time.monotonic()
        self.board.mark_busy(self.name, start + self._expected_s)
        try:
            outputs = self._call(lambda: self.backend.infer(self._feeds(frames)))  # type: ignore[arg-type]
        finally:
            for f in frames:
                _release(f)  # the input buffer is free again as soon as the backend has read it
        self._emit(frames, outputs, start)

    def _step_async(self) -> None:
        # wait for new frames only when nothing is in flight; otherwise just look and collect
        frames = self.board.take(self.max_batch, timeout=0.0 if self._inflight else 0.5)
        if frames:
            start = time.monotonic()
            feeds = self._feeds(frames)
            try:
                handle = self._call(lambda: self.backend.submit(feeds))  # type: ignore[attr-defined]
            except BaseException:
                for f in frames:
                    _release(f)
                raise
            self._inflight.append((frames, handle, start))
            self.board.mark_busy(self.name, start + self._expected_s)
        if self._inflight and (len(self._inflight) >= self._depth or not frames):
            done_frames, handle, started = self._inflight.popleft()
            try:
                outputs = self._call(lambda: self.backend.collect(handle))  # type: ignore[attr-defined]
            finally:
                for f in done_frames:
                    _release(f)  # device inputs stay owned until the GPU has finished with them
            self._emit(done_frames, outputs, started)

    def _feeds(self, frames: List[PreparedFrame]) -> Dict[str, object]:
        tensors = [f.tensor for f in frames]
        if self._device_feeds:
            return {self.input_name: tensors if len(tensors) > 1 else tensors[0]}
        return {self.input_name: _stack(tensors)}

    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"inference failed: {exc}") from exc

    def _emit(self, frames: List[PreparedFrame], outputs: Dict[str, np.ndarray], start: float) -> None:
        done = time.monotonic()
        self.board.mark_busy(self.name, 0.0)
        self.frames_inferred += len(frames)
        self.last_infer_ms = (done - start) * 1000.0
        took = done - start
        self._expected_s = took if self._expected_s == 0.0 else 0.8 * self._expected_s + 0.2 * took
        batch = InferenceBatch(frames, outputs, start, self.last_infer_ms)
        # bounded hand-off: if post-processing falls behind, inference waits (frames are then dropped
        # at the slots, never queued), but the heartbeat keeps beating while we wait
        while not self.stop_event.is_set():
            try:
                self.out.put(batch, timeout=0.5)
                return
            except queue.Full:
                self.beat()

    def teardown(self) -> None:
        while self._inflight:  # give every buffer back, even after a failure
            frames, _, _ = self._inflight.popleft()
            for f in frames:
                _release(f)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _stack(tensors: Sequence[object]) -> np.ndarray:
    arrays = [np.asarray(t) for t in tensors]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays, axis=0)


class PostWorker(Worker):
    """Decodes raw outputs into detections and passes each frame's result to the sinks.

    With several inference workers a later frame can finish first; results wait here until every
    earlier frame of the same camera has left inference, so each camera's results stay in frame order.
    """

    def __init__(
        self,
        inbox: queue.Queue[InferenceBatch],
        decode: Callable[[Dict[str, np.ndarray], Sequence[Letterbox]], Sequence[Tuple[Detection, ...]]],
        sinks: Sequence[Callable[[DetectionResult], None]],
        board: Optional[FrameBoard] = None,
    ) -> None:
        super().__init__("postprocess")
        self.inbox = inbox
        self.decode = decode
        self.sinks = list(sinks)
        self.board = board
        self.results = 0
        self._held: Dict[str, List[Tuple[int, int, DetectionResult]]] = {}
        self._arrivals = 0

    def step(self) -> None:
        try:
            batch = self.inbox.get(timeout=0.5)
        except queue.Empty:
            return
        self.handle(batch)

    def handle(self, batch: InferenceBatch) -> None:
        start = time.monotonic()
        per_frame = self.decode(batch.outputs, [f.letterbox for f in batch.frames])
        decode_ms = (time.monotonic() - start) * 1000.0
        for frame, detections in zip(batch.frames, per_frame):
            result = DetectionResult(
                camera=frame.camera,
                seq=frame.seq,
                capture_time=frame.capture_time,
                capture_monotonic=frame.capture_monotonic,
                source_width=frame.letterbox.source_width,
                source_height=frame.letterbox.source_height,
                detections=tuple(detections),
                timings_ms={
                    "preprocess": frame.preprocess_ms,
                    # time the prepared frame waited in its slot for the inference worker
                    "wait": max(
                        0.0, _ms(batch.infer_start_monotonic - frame.capture_monotonic) - frame.preprocess_ms
                    ),
                    "infer": batch.infer_ms,
                    "decode": decode_ms,
                },
                image=frame.image,  # only kept when the tracking stage takes snapshots
            )
            if self.board is None:
                self._deliver(result)
                continue
            oldest_pending = self.board.done(frame.camera, frame.seq)
            held = self._held.setdefault(frame.camera, [])
            self._arrivals += 1
            heapq.heappush(held, (frame.seq, self._arrivals, result))
            while held and (oldest_pending is None or held[0][0] < oldest_pending):
                self._deliver(heapq.heappop(held)[2])

    def teardown(self) -> None:
        # at stop, results still waiting for an earlier frame go out in order rather than being lost
        for held in self._held.values():
            while held:
                self._deliver(heapq.heappop(held)[2])

    def _deliver(self, result: DetectionResult) -> None:
        for sink in self.sinks:
            sink(result)
        self.results += 1
