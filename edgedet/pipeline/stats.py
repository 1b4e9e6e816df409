"""Per-camera counters and stage latencies, summarised into the periodic stats message."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Optional

from edgedet.pipeline.latency import LatencyRecorder
from edgedet.types import DetectionResult


@dataclass
class CameraCounters:
    published: int = 0
    detections: int = 0
    # most objects of each class seen in one frame since the last ``take_in_view`` (for the log line)
    in_view: Dict[str, int] = field(default_factory=dict)
    # (monotonic time, published count) samples for a moving frames/s
    window: Deque[float] = field(default_factory=lambda: deque(maxlen=120))


class PipelineStats:
    """Fed by the post-processing sink for every result; read by the supervisor's stats timer."""

    def __init__(self, latency_window: int = 1000) -> None:
        self.latency = LatencyRecorder(latency_window)
        self.cameras: Dict[str, CameraCounters] = {}
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def record(self, result: DetectionResult, publish_done_monotonic: float) -> None:
        total_ms = (publish_done_monotonic - result.capture_monotonic) * 1000.0
        self.latency.add_all(result.timings_ms)
        self.latency.add("capture_to_publish", total_ms)
        with self._lock:
            counters = self.cameras.setdefault(result.camera, CameraCounters())
            counters.published += 1
            counters.detections += len(result.detections)
            frame_counts: Dict[str, int] = {}
            for det in result.detections:
                frame_counts[det.class_name] = frame_counts.get(det.class_name, 0) + 1
            for name, n in frame_counts.items():
                counters.in_view[name] = max(n, counters.in_view.get(name, 0))
            counters.window.append(publish_done_monotonic)

    def fps(self, camera: str, horizon_s: float = 10.0) -> Optional[float]:
        with self._lock:
            counters = self.cameras.get(camera)
            if counters is None or len(counters.window) < 2:
                return None
            now = time.monotonic()
            recent = [t for t in counters.window if now - t <= horizon_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def total_fps(self) -> float:
        with self._lock:
            names = list(self.cameras)
        return sum(self.fps(name) or 0.0 for name in names)

    def published(self, camera: str) -> int:
        with self._lock:
            counters = self.cameras.get(camera)
            return counters.published if counters else 0

    def peek_in_view(self, camera: str) -> Dict[str, int]:
        """Most objects per class in one frame since the last ``take_in_view`` (kept)."""
        with self._lock:
            counters = self.cameras.get(camera)
            return dict(counters.in_view) if counters is not None else {}

    def forget(self, camera: str) -> None:
        """A camera was removed: its counters go (a camera added again later starts from zero)."""
        with self._lock:
            self.cameras.pop(camera, None)

    def take_in_view(self, camera: str) -> Dict[str, int]:
        """Most objects per class in one frame since the last call (then reset)."""
        with self._lock:
            counters = self.cameras.get(camera)
            if counters is None:
                return {}
            seen, counters.in_view = counters.in_view, {}
            return seen

    def latency_summary(self) -> Dict[str, Any]:
        return self.latency.summary()
