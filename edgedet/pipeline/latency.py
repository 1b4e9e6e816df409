"""Bounded per-stage latency samples with p50/p95 summaries for the stats message."""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Dict, Optional

import numpy as np


class LatencyRecorder:
    """Keeps the last ``window`` samples per stage (bounded memory for a daemon that runs for months)."""

    def __init__(self, window: int = 1000) -> None:
        self._window = window
        self._samples: Dict[str, Deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            samples = self._samples.get(stage)
            if samples is None:
                samples = self._samples[stage] = deque(maxlen=self._window)
            samples.append(ms)

    def add_all(self, timings: Dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.add(stage, ms)

    def percentiles(self, stage: str) -> Optional[Dict[str, float]]:
        with self._lock:
            samples = list(self._samples.get(stage, ()))
        if not samples:
            return None
        p50, p95 = np.percentile(np.asarray(samples), [50, 95])
        return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "n": len(samples)}

    def summary(self) -> Dict[str, Dict[str, float]]:
        with self._lock:
            stages = list(self._samples)
        out = {}
        for stage in stages:
            pct = self.percentiles(stage)
            if pct is not None:
                out[stage] = pct
        return out
