"""The capture stage of one camera: read, preprocess into a pooled buffer, put into the latest-frame slot.

Two threads per camera:

* ``capture-<camera>`` (the Worker): takes decoded frames, applies the frame-rate cap, preprocesses
  into a buffer from a small pool and puts the result into the slot. It never waits for inference:
  the slot replaces an unread frame, and when the consumer holds every buffer the frame is dropped.
  It watches the stream (no frame for ``stall_timeout_s`` = stalled) and reopens it with capped
  exponential backoff. It only ever waits on timeouts, so its heartbeat stays fresh.
* ``capture-<camera>-reader-<n>`` (one per opening): opens the reader and calls ``read()``, which may
  block for a long time on a dead stream. A reader thread that hangs is abandoned, not waited for:
  it closes its own reader if the call ever returns, and a fresh one is started for the reopen.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple

import numpy as np

from edgedet.errors import DependencyError, EdgedetError, SourceError
from edgedet.preprocess.base import Preprocessor
from edgedet.runtime.ratelimit import RateLimitedLog
from edgedet.runtime.slot import LatestSlot
from edgedet.runtime.worker import Worker
from edgedet.sources.base import FrameReader, check_frame, redact_url
from edgedet.sources.config import CameraConfig
from edgedet.sources.frames import FramePool, frame_pool_for
from edgedet.types import PreparedFrame

log = logging.getLogger(__name__)

WAIT_S = 0.2  # longest wait in one worker step: keeps the heartbeat fresh and stop() prompt
MAX_FAILED_READS = 5  # consecutive failed reads of a live stream before it counts as dropped
FAILED_READ_PAUSE_S = 0.1  # between failed reads, so a broken stream is never a busy loop
MAX_STUCK_READERS = 3  # reader threads hung in a driver call; no new one is started beyond this
LOG_EVERY_S = 10.0  # rate limit for repeated per-frame warnings
LEAD_MARGIN_S = 0.002  # a non-live frame is asked for this much earlier than strictly needed


class CaptureState(str, enum.Enum):
    STARTING = "starting"  # first opening in progress
    STREAMING = "streaming"  # frames arrive
    STALLED = "stalled"  # the stream stopped or failed; waiting out the backoff before reopening
    RECONNECTING = "reconnecting"  # reopening, or waiting to retry after a failed reopen
    ENDED = "ended"  # a file played once has ended
    FAILED = "failed"  # cannot start at all (see ``last_error`` and the worker's ``failure``)


@dataclass(frozen=True)
class CaptureStatus:
    camera: str
    state: CaptureState
    source: str  # what is being read, passwords removed
    frames_read: int  # frames decoded from the source (the last PreparedFrame.seq)
    frames_prepared: int  # preprocessed and put into the slot
    frames_dropped_pool: int  # dropped: every buffer was held by the consumer
    frames_dropped_behind: int  # dropped: a live source delivered faster than capture preprocessed
    frames_skipped: int  # skipped on purpose by the frame-rate cap
    frames_corrupt: int  # failed reads and frames of the wrong shape, skipped
    reconnects: int  # reopen attempts after the first opening
    last_error: Optional[str]
    fps: float  # measured rate of frames read over the last couple of seconds
    source_fps: Optional[float]  # what the source says it delivers
    max_fps: Optional[float]  # the frame-rate cap in force (config and set_max_fps combined)
    last_frame_age_s: Optional[float]
    retry_in_s: Optional[float]  # seconds until the next reopen attempt, while waiting for one


class BufferPool:
    """A fixed set of preprocessing output buffers; ``acquire`` never blocks, ``release`` is thread-safe."""

    def __init__(self, buffers: List[object]) -> None:
        self._free = list(buffers)
        self.size = len(buffers)
        self._lock = threading.Lock()

    def acquire(self) -> Optional[object]:
        with self._lock:
            return self._free.pop() if self._free else None

    def release(self, buf: object) -> None:
        with self._lock:
            if any(b is buf for b in self._free):  # released twice: keep one copy
                return
            self._free.append(buf)

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)


class _Release:
    """PreparedFrame.release: gives the buffer back once, however often it is called."""

    __slots__ = ("_buf", "_pool")

    def __init__(self, pool: BufferPool, buf: object) -> None:
        self._pool: Optional[BufferPool] = pool
        self._buf = buf

    def __call__(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(self._buf)


@dataclass
class _Event:
    kind: str  # "opened", "open_failed", "corrupt", "dropped", "ended"
    generation: int
    detail: Any = None


class _Mailbox:
    """Between a reader thread and the worker: the latest frame plus control events, in order.

    Frames are numbered here (seq = frames read so far). A live source replaces a frame the worker has
    not taken yet (counted). A non-live source (a file played as fast as the pipeline goes) reads only
    when the worker asks (``want``): every decoded frame is used, none is decoded ahead of need (which
    would only add latency and take CPU from inference).
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0  # the reader thread whose posts count; older ones are ignored
        self.frame: Optional[Tuple[np.ndarray, int, float, float]] = None
        self.events: Deque[_Event] = collections.deque(maxlen=64)
        self.frames_read = 0
        self.replaced = 0
        self.read_times: Deque[float] = collections.deque(maxlen=32)
        self.wanted = False
        self.frames: Optional[FramePool] = None  # the buffers frames are decoded into (CUDA only)

    def discard(self, image: np.ndarray) -> None:
        """A frame nobody reads any more: its buffer goes back to the frame pool (if it has one)."""
        if self.frames is not None:
            self.frames.release(image)

    def want(self) -> None:
        with self.cond:
            self.wanted = True
            self.cond.notify_all()

    def wait_wanted(self, generation: int, stop: threading.Event) -> bool:
        """For non-live readers: block until the worker asks for a frame; False when superseded."""
        with self.cond:
            while not self.wanted and generation == self.generation:
                if stop.is_set():
                    return False
                self.cond.wait(WAIT_S)
            return generation == self.generation

    def post_frame(self, generation: int, image: np.ndarray, live: bool, stop: threading.Event) -> bool:
        wall, mono = time.time(), time.monotonic()
        with self.cond:
            while not live and self.frame is not None and generation == self.generation:
                if stop.is_set():
                    return False
                self.cond.wait(WAIT_S)
            if generation != self.generation:
                return False
            self.frames_read += 1
            if self.frame is not None:
                self.replaced += 1
                self.discard(self.frame[0])
            self.wanted = False
            self.frame = (image, self.frames_read, wall, mono)
            self.read_times.append(mono)
            self.cond.notify_all()
            return True

    def post(self, event: _Event) -> None:
        with self.cond:
            if event.generation == self.generation:
                self.events.append(event)
                self.cond.notify_all()

    def take(self, timeout: float) -> Tuple[Optional[Tuple[np.ndarray, int, float, float]], List[_Event]]:
        with self.cond:
            if self.frame is None and not self.events:
                self.cond.wait(timeout)
            frame, self.frame = self.frame, None
            events = list(self.events)
            self.events.clear()
            self.cond.notify_all()  # a file reader may be waiting for the frame to be taken
            return frame, events

    def new_generation(self) -> int:
        with self.cond:
            self.generation += 1
            if self.frame is not None:
                self.discard(self.frame[0])
            self.frame = None
            self.wanted = False
            self.events.clear()
            self.cond.notify_all()
            return self.generation

    def fps(self, now: float) -> float:
        with self.cond:
            times = list(self.read_times)
        if len(times) < 2 or now - times[-1] > 2.0:
            return 0.0
        # only the last two seconds: a rate that changed (throttling, a stall) shows quickly
        recent = [t for t in times if t >= times[-1] - 2.0]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])


class _ReaderThread:
    """One opening of the source: factory(), open(), read() until None or stop, close() — in its thread."""

    def __init__(
        self, name: str, factory: Callable[[], FrameReader], mailbox: _Mailbox, generation: int
    ) -> None:
        self.factory = factory
        self.mailbox = mailbox
        self.generation = generation
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.opened_at: Optional[float] = None  # set once open() has returned
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _post(self, kind: str, detail: Any = None) -> None:
        self.mailbox.post(_Event(kind, self.generation, detail))

    def _run(self) -> None:
        reader: Optional[FrameReader] = None
        try:
            try:
                reader = self.factory()
                reader.open()
            except Exception as exc:
                self._post("open_failed", exc)
                return
            self.opened_at = time.monotonic()
            self._post("opened", (reader.description, reader.fps, bool(getattr(reader, "live", True))))
            self._read_loop(reader)
        except Exception as exc:  # a reader bug must not pass silently: the worker logs and reopens
            self._post("dropped", f"reader failed: {type(exc).__name__}: {exc}")
        finally:
            if reader is not None:
                try:
                    reader.close()
                except Exception as exc:
                    log.warning("closing %s failed: %s", reader.description, exc)

    def _read_loop(self, reader: FrameReader) -> None:
        live = bool(getattr(reader, "live", True))
        failed = 0
        while not self.stop_event.is_set():
            if not live and not self.mailbox.wait_wanted(self.generation, self.stop_event):
                return
            frames = self.mailbox.frames
            image = frames.read(reader) if frames is not None else reader.read()
            if self.stop_event.is_set():
                if image is not None:
                    self.mailbox.discard(image)
                return
            if image is None:
                if getattr(reader, "ended", False):
                    self._post("ended")
                    return
                failed += 1
                if not live or failed >= MAX_FAILED_READS:
                    self._post("dropped", f"no frame from {reader.description} ({failed} failed reads)")
                    return
                self._post("corrupt", "a read failed")
                self.stop_event.wait(FAILED_READ_PAUSE_S)
                continue
            problem = check_frame(image)
            if problem is not None:
                self.mailbox.discard(image)
                self._post("corrupt", problem)
                continue
            failed = 0
            if not self.mailbox.post_frame(self.generation, image, live, self.stop_event):
                self.mailbox.discard(image)
                return


def _describe_source(source: object) -> str:
    kind = getattr(source, "type", "source")
    where = getattr(source, "path", None) or getattr(source, "url", None) or getattr(source, "device", None)
    if where is None:
        where = getattr(source, "sensor_id", "")
    return redact_url(f"{kind} {where}".strip())


class CaptureWorker(Worker):
    """Capture + preprocessing of one camera into ``slot``; see the module docstring.

    ``reader_factory`` returns a new, unopened reader each time it is called (once per opening).
    ``retry_first_open``: when False (default), a source that cannot be opened at start-up is a failure
    (state ``failed``, ``failure`` holds the SourceError) so a bad config is a clear start-up error; when
    True the first opening is retried with backoff like any reopen. Once a source has opened, every later
    problem is retried forever: a camera that reboots must not stop the daemon.
    """

    def __init__(
        self,
        camera: CameraConfig,
        reader_factory: Callable[[], FrameReader],
        preprocessor: Preprocessor,
        slot: LatestSlot[PreparedFrame],
        pool_size: int = 3,
        keep_image: bool = False,
        retry_first_open: bool = False,
    ) -> None:
        super().__init__(f"capture-{camera.name}")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.camera = camera
        self.reader_factory = reader_factory
        self.preprocessor = preprocessor
        self.slot = slot
        self.pool_size = pool_size
        self.keep_image = keep_image
        self.retry_first_open = retry_first_open
        self.pool: Optional[BufferPool] = None
        self._runtime_max_fps: Optional[float] = None
        self._rate_limited = RateLimitedLog(log, LOG_EVERY_S)  # per-frame warnings
        self._reset()

    def _reset(self) -> None:
        self._mailbox = _Mailbox()
        self._reader: Optional[_ReaderThread] = None
        self._abandoned: List[_ReaderThread] = []
        self._state = CaptureState.STARTING
        self._source = _describe_source(self.camera.source)
        self._source_fps: Optional[float] = None
        self._live = True
        self._wanted_at: Optional[float] = None  # when a non-live source was asked for its next frame
        self._lead_s = 0.0  # moving average of asking for a frame -> frame in the slot
        self._ever_opened = False
        self._attempts = 0  # consecutive failed openings/streams: the backoff exponent
        self._next_open_at: Optional[float] = time.monotonic()
        self._last_frame: Optional[float] = None
        self._next_due: Optional[float] = None  # frame-rate cap schedule
        self.frames_prepared = 0
        self.frames_dropped_pool = 0
        self.frames_skipped = 0
        self.frames_corrupt = 0
        self.reconnects = 0
        self.last_error: Optional[str] = None

    # -- public --------------------------------------------------------------------------------------
    def set_max_fps(self, fps: Optional[float]) -> None:
        """Cap the processed frame rate at run time (None lifts it; camera.max_fps still applies)."""
        if fps is not None and not fps > 0:
            raise ValueError(f"max fps must be positive or None, not {fps!r}")
        self._runtime_max_fps = fps

    @property
    def max_fps(self) -> Optional[float]:
        caps = [c for c in (self.camera.max_fps, self._runtime_max_fps) if c is not None]
        return min(caps) if caps else None

    @property
    def state(self) -> CaptureState:
        return self._state

    def status(self) -> CaptureStatus:
        now = time.monotonic()
        mailbox = self._mailbox
        next_open = self._next_open_at
        waiting = self._reader is None and next_open is not None and self._state != CaptureState.ENDED
        return CaptureStatus(
            camera=self.camera.name,
            state=self._state,
            source=self._source,
            frames_read=mailbox.frames_read,
            frames_prepared=self.frames_prepared,
            frames_dropped_pool=self.frames_dropped_pool,
            frames_dropped_behind=mailbox.replaced,
            frames_skipped=self.frames_skipped,
            frames_corrupt=self.frames_corrupt,
            reconnects=self.reconnects,
            last_error=self.last_error,
            fps=round(mailbox.fps(now), 2),
            source_fps=self._source_fps,
            max_fps=self.max_fps,
            last_frame_age_s=None if self._last_frame is None else now - self._last_frame,
            retry_in_s=max(0.0, next_open - now) if waiting and next_open is not None else None,
        )

    # -- worker hooks --------------------------------------------------------------------------------
    def setup(self) -> None:
        self._reset()
        # allocated here, in the capture thread: a CUDA preprocessor needs its context current
        self.pool = BufferPool([self.preprocessor.allocate() for _ in range(self.pool_size)])
        # CUDA: the reader decodes into the preprocessor's pinned/mapped memory (sources/frames.py);
        # two more than the tensor pool: one being decoded, one waiting in the mailbox
        self._mailbox.frames = frame_pool_for(self.preprocessor, self.pool_size + 2, self.name)

    def step(self) -> None:
        now = time.monotonic()
        if self._state == CaptureState.ENDED:
            self.stop_event.wait(WAIT_S)
            return
        if self._reader is None:
            self._maybe_open(now)
            if self._reader is None:
                self.stop_event.wait(WAIT_S)
                return
        wait = WAIT_S
        if not self._live and self._ever_opened and self._state != CaptureState.ENDED:
            wait = self._ask_for_frame(now)
        frame, events = self._mailbox.take(wait)
        if frame is not None:
            try:
                self._handle_frame(*frame)
            finally:  # read by the preprocessor (or skipped): the frame buffer goes back to its pool
                self._mailbox.discard(frame[0])
        for event in events:
            self._handle_event(event)
        self._check_stall(time.monotonic())

    def teardown(self) -> None:
        readers = [r for r in [self._reader, *self._abandoned] if r is not None]
        for r in readers:
            r.stop()
        self._mailbox.new_generation()  # wakes a file reader waiting for its frame to be taken
        deadline = time.monotonic() + 2.0
        for r in readers:
            r.thread.join(max(0.0, deadline - time.monotonic()))
            if r.alive:
                log.warning(
                    "%s: reader thread %s is stuck in the driver; leaving it", self.name, r.thread.name
                )
        self._reader = None
        if self._mailbox.frames is not None:
            self._mailbox.frames.close()  # buffers still lent out are freed as they come back

    # -- opening and reopening -----------------------------------------------------------------------
    def _maybe_open(self, now: float) -> None:
        if self._next_open_at is None or now < self._next_open_at:
            return
        self._abandoned = [r for r in self._abandoned if r.alive]
        if len(self._abandoned) >= MAX_STUCK_READERS:
            self.last_error = (
                f"{len(self._abandoned)} reader threads are stuck in the driver; waiting for them"
            )
            self._schedule_retry(now)
            return
        if self._ever_opened or self._attempts:
            self.reconnects += 1
            self._state = CaptureState.RECONNECTING
        generation = self._mailbox.new_generation()
        self._reader = _ReaderThread(
            f"{self.name}-reader-{generation}", self.reader_factory, self._mailbox, generation
        )
        self._next_open_at = None
        self._reader.start()

    def _backoff(self) -> float:
        rc = self.camera.reconnect
        return min(rc.max_s, rc.initial_s * rc.multiplier ** min(self._attempts, 64))

    def _schedule_retry(self, now: float) -> float:
        delay = self._backoff()
        self._attempts += 1
        self._next_open_at = now + delay
        return delay

    def _lose_stream(self, reason: str, state: CaptureState) -> None:
        """The current opening is over (stalled, dropped or failed): abandon its thread, retry later."""
        reader = self._reader
        self._reader = None
        if reader is not None:
            reader.stop()
            if reader.alive:
                self._abandoned.append(reader)
        self._mailbox.new_generation()
        self.last_error = reason
        self._state = state
        delay = self._schedule_retry(time.monotonic())
        log.warning("%s: %s; reopening in %.3g s", self.name, reason, delay)

    def _handle_event(self, event: _Event) -> None:
        if event.generation != self._mailbox.generation:
            return
        if event.kind == "opened":
            self._source, self._source_fps, self._live = event.detail
            self._wanted_at = None  # a new reader: nothing was asked of it yet
            self._ever_opened = True
            log.info("%s: opened %s (%s fps)", self.name, self._source, self._source_fps or "unknown")
        elif event.kind == "corrupt":
            self.frames_corrupt += 1
            self._rate_limited.warning("corrupt", "%s: skipped a corrupt frame: %s", self.name, event.detail)
        elif event.kind == "ended":
            self._reader = None
            self._next_open_at = None
            self._state = CaptureState.ENDED
            log.info("%s: %s has ended after %d frames", self.name, self._source, self._mailbox.frames_read)
        elif event.kind == "dropped":
            self._lose_stream(str(event.detail), CaptureState.STALLED)
        elif event.kind == "open_failed":
            self._open_failed(event.detail)

    def _open_failed(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, EdgedetError) else f"{type(exc).__name__}: {exc}"
        # a missing dependency (no OpenCV) never heals; a camera that is not up yet does
        permanent = isinstance(exc, DependencyError)
        if permanent or (not self._ever_opened and not self.retry_first_open and self.reconnects == 0):
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.stop()
                self._abandoned.append(reader)
            self._next_open_at = None
            self.last_error = message
            self._state = CaptureState.FAILED
            if isinstance(exc, EdgedetError):  # SourceError, DependencyError: already a user message
                raise exc
            raise SourceError(f"camera {self.camera.name}: {message}") from exc
        self._lose_stream(message, CaptureState.RECONNECTING)

    def _check_stall(self, now: float) -> None:
        reader = self._reader
        if reader is None:
            return
        timeout = self.camera.stall_timeout_s
        opened_at = reader.opened_at
        if opened_at is None:
            # a reader's own open timeout should fire first; this catches a driver call that never returns
            limit = max(timeout, 20.0)
            if now - reader.started > limit:
                self._open_failed(SourceError(f"{self._source}: did not open within {limit:g} s"))
            return
        since = max(opened_at, self._last_frame or opened_at)
        if now - since > timeout:
            self._lose_stream(
                f"no frame for {now - since:.1f} s (stall timeout {timeout:g} s)", CaptureState.STALLED
            )

    # -- frames --------------------------------------------------------------------------------------
    def _ask_for_frame(self, now: float) -> float:
        """Non-live source: ask for the next frame just in time for the consumer to be free.

        Only once the previous frame was taken from the slot, and not before the consumer is expected to
        finish its current work minus how long reading + preprocessing take: so the file plays as fast
        as inference goes, and a frame never waits in the slot (lowest capture-to-publish latency).
        Returns how long the caller may then wait for the mailbox (0 when no frame was asked for).
        """
        if self._wanted_at is not None:
            return WAIT_S  # a frame is on its way
        if len(self.slot):
            self.slot.wait_empty(WAIT_S)
            return 0.0
        ready_at = self.slot.busy_until - self._lead_s - LEAD_MARGIN_S
        if ready_at > now:
            self.stop_event.wait(min(WAIT_S, ready_at - now))
            return 0.0
        self._wanted_at = time.monotonic()
        self._mailbox.want()
        return WAIT_S

    def _handle_frame(self, image: np.ndarray, seq: int, wall: float, mono: float) -> None:
        asked_at, self._wanted_at = self._wanted_at, None  # whatever becomes of it, ask again next time
        self._last_frame = mono
        if self._state != CaptureState.STREAMING:
            if self._state != CaptureState.STARTING:
                log.info("%s: streaming again after %d reopen attempt(s)", self.name, self._attempts)
            self._state = CaptureState.STREAMING
            self._attempts = 0
        if not self._admit(mono):
            self.frames_skipped += 1
            return
        pool = self.pool
        buf = pool.acquire() if pool is not None else None
        if pool is None or buf is None:
            self.frames_dropped_pool += 1
            return
        start = time.perf_counter()
        try:
            letterbox = self.preprocessor.run(image, buf)
        except ValueError as exc:  # the preprocessor's way of refusing an image it cannot handle
            pool.release(buf)
            self.frames_corrupt += 1
            self._rate_limited.warning(
                "preprocess", "%s: skipped a frame the preprocessor refused: %s", self.name, exc
            )
            return
        except BaseException:
            pool.release(buf)
            raise
        prepared = PreparedFrame(
            camera=self.camera.name,
            seq=seq,
            capture_time=wall,
            capture_monotonic=mono,
            letterbox=letterbox,
            tensor=buf,
            preprocess_ms=(time.perf_counter() - start) * 1000.0,
            image=self._picture(image) if self.keep_image else None,
            release=_Release(pool, buf),
        )
        self.frames_prepared += 1
        self.slot.put(prepared)
        if asked_at is not None:
            lead = time.monotonic() - asked_at
            self._lead_s = lead if self._lead_s == 0.0 else 0.8 * self._lead_s + 0.2 * lead

    def _picture(self, image: np.ndarray) -> np.ndarray:
        """The frame's picture for snapshots, which lives on after inference with no release point:
        a copy when the frame sits in a pooled frame buffer (that goes back to its pool at once)."""
        frames = self._mailbox.frames
        return image.copy() if frames is not None and frames.owns(image) else image

    def _admit(self, now: float) -> bool:
        """The frame-rate cap: admit on a fixed schedule, never in a burst after a gap."""
        cap = self.max_fps
        if cap is None:
            self._next_due = None
            return True
        interval = 1.0 / cap
        # a little tolerance: a 10 fps source capped at 5 fps must keep every second frame despite jitter
        if self._next_due is not None and now < self._next_due - 0.1 * interval:
            return False
        base = now if self._next_due is None else max(self._next_due, now - interval)
        self._next_due = base + interval
        return True
