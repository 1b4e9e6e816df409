"""Prometheus metrics: the status snapshot as metric families, plus per-frame latency histograms.

Nearly everything is read at scrape time from the daemon's status snapshot (service/status.py), so a
scrape costs one pass over a few dozen numbers and the pipeline pays nothing for it. The exceptions are
the latency histograms: a histogram needs every sample, so ``LatencyHistograms.observe`` is a result sink
(a few microseconds per frame on the post-processing thread). Names follow Prometheus conventions:
``edgedet_`` prefix, base units (seconds, watts, ratios), ``_total`` counters.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from edgedet import __version__
from edgedet.publish.messages import ModelInfo
from edgedet.service.status import DaemonStatus
from edgedet.telemetry.reading import Reading
from edgedet.tracking.values import TrackingUpdate
from edgedet.types import DetectionResult

# seconds; from 2 ms (a decode) to 10 s (a stalled frame), denser where a Jetson's frames usually land
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
# result.timings_ms stage name -> the ``stage`` label
STAGES = {"preprocess": "preprocess", "wait": "wait", "infer": "inference", "decode": "decode"}

Snapshot = Callable[[], Optional[DaemonStatus]]
LatestReading = Callable[[], Optional[Reading]]
CurrentModel = Callable[[], Optional[ModelInfo]]  # the running pipeline's model (frames flow only then)


class LatencyHistograms:
    """Per-stage and capture-to-publish latency histograms, and inference time per backend and precision."""

    def __init__(self, registry: CollectorRegistry, model: CurrentModel) -> None:
        self._model = model
        self.stage = Histogram(
            "edgedet_stage_latency_seconds",
            "Time a frame spent in each stage; capture_to_publish is the whole way from the camera to MQTT",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "edgedet_inference_seconds",
            "Inference time of one batch, by backend and precision",
            ["backend", "precision"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # label children resolved once: .labels() costs a lock and a dict lookup per call
        self._inference: Dict[Tuple[str, str], Any] = {}
        self._children = {
            label: self.stage.labels(label) for label in [*STAGES.values(), "capture_to_publish"]
        }

    def observe(self, result: DetectionResult) -> None:
        """A result sink: called after the result was handed to the publisher."""
        for key, ms in result.timings_ms.items():
            label = STAGES.get(key)
            if label is not None and ms is not None and math.isfinite(ms):
                self._children[label].observe(ms / 1000.0)
        self._children["capture_to_publish"].observe(max(0.0, time.monotonic() - result.capture_monotonic))
        infer = result.timings_ms.get("infer")
        model = self._model()
        if infer is not None and model is not None:
            labels = (model.backend, model.precision)
            child = self._inference.get(labels)
            if child is None:
                child = self._inference[labels] = self.inference.labels(*labels)
            child.observe(infer / 1000.0)


def _counter(name: str, doc: str, labels: List[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: Optional[List[str]] = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def _num(value: Optional[float], scale: float = 1.0) -> float:
    return math.nan if value is None else float(value) * scale


class SnapshotCollector:
    """A prometheus_client collector reading the latest status snapshot (and telemetry reading)."""

    def __init__(self, snapshot: Snapshot, reading: LatestReading) -> None:
        self._snapshot = snapshot
        self._reading = reading
        self._build: Optional[Dict[str, str]] = None

    def describe(self) -> List[Metric]:
        return []  # families depend on the snapshot: never collect at registration time

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if self._build is None:
            self._build = platform_info()  # files read once: the platform does not change under us
        info = dict(self._build)
        info["tensorrt"] = tensorrt_version()
        if snap is not None:
            info.update(backend=snap.model.backend, precision=snap.model.precision, model=snap.model.name)
        yield InfoMetricFamily("edgedet_build", "edgedet version, model, backend and platform versions", info)
        if snap is None:
            return
        yield from self._cameras(snap)
        yield from self._daemon(snap)
        yield from self._mqtt(snap)
        yield from self._telemetry(snap, self._reading())

    def _cameras(self, s: DaemonStatus) -> Iterator[Metric]:
        cam = ["camera"]
        frames = {
            "in": _counter("edgedet_camera_frames_in", "Frames read from the camera", cam),
            "processed": _counter("edgedet_camera_frames_processed", "Frames inferred and published", cam),
            "dropped": _counter(
                "edgedet_camera_frames_dropped", "Frames read but not processed (inference busy)", cam
            ),
            "skipped": _counter(
                "edgedet_camera_frames_skipped", "Frames left out by the frame-rate cap", cam
            ),
            "corrupt": _counter("edgedet_camera_frames_corrupt", "Failed reads and unusable frames", cam),
        }
        up = _gauge("edgedet_camera_up", "1 while frames arrive from the camera", cam)
        state = _gauge(
            "edgedet_camera_state", "The camera's state (1 for the current one)", ["camera", "state"]
        )
        reconnects = _counter("edgedet_camera_reconnects", "Opening attempts after the first", cam)
        restarts = _counter(
            "edgedet_camera_capture_restarts", "Crashed capture threads replaced by the supervisor", cam
        )
        fps = _gauge(
            "edgedet_camera_fps", "Frames per second read (in) and processed", ["camera", "direction"]
        )
        age = _gauge("edgedet_camera_last_frame_age_seconds", "Time since the last frame arrived", cam)
        for c in s.cameras:
            frames["in"].add_metric([c.name], c.frames_in)
            frames["processed"].add_metric([c.name], c.frames_processed)
            frames["dropped"].add_metric([c.name], c.frames_dropped)
            frames["skipped"].add_metric([c.name], c.frames_skipped)
            frames["corrupt"].add_metric([c.name], c.frames_corrupt)
            up.add_metric([c.name], 1.0 if c.up else 0.0)
            state.add_metric([c.name, c.state], 1.0)
            reconnects.add_metric([c.name], c.reconnects)
            restarts.add_metric([c.name], c.capture_restarts)
            fps.add_metric([c.name, "in"], c.fps_in)
            fps.add_metric([c.name, "processed"], _num(c.fps_processed))
            age.add_metric([c.name], _num(c.last_frame_age_s))
        yield from frames.values()
        yield from (up, state, reconnects, restarts, fps, age)

    def _daemon(self, s: DaemonStatus) -> Iterator[Metric]:
        uptime = _gauge("edgedet_uptime_seconds", "Seconds since the pipeline started")
        uptime.add_metric([], s.uptime_s)
        yield uptime
        total = _gauge("edgedet_fps_processed", "Frames processed per second, all cameras")
        total.add_metric([], s.fps_processed_total)
        yield total
        workers = _gauge("edgedet_inference_workers", "Parallel inference workers")
        workers.add_metric([], s.model.inference_workers)
        yield workers
        healthy = _gauge("edgedet_watchdog_healthy", "1 while every critical stage shows progress")
        healthy.add_metric([], 1.0 if s.watchdog.healthy else 0.0)
        yield healthy
        rejected = _gauge("edgedet_config_reload_rejected", "1 while the last reload was refused")
        rejected.add_metric([], 0.0 if s.config_error is None else 1.0)
        yield rejected
        if s.throttle is not None:
            active = _gauge("edgedet_throttle_active", "1 while the thermal policy caps the frame rate")
            active.add_metric([], 0.0 if s.throttle.max_fps is None else 1.0)
            cap = _gauge("edgedet_throttle_max_fps", "The frame-rate cap of the thermal policy (NaN: none)")
            cap.add_metric([], _num(s.throttle.max_fps))
            state = _gauge(
                "edgedet_throttle_state", "The thermal policy's state (1 for the current one)", ["state"]
            )
            state.add_metric([s.throttle.state], 1.0)
            yield from (active, cap, state)

    def _mqtt(self, s: DaemonStatus) -> Iterator[Metric]:
        m = s.mqtt
        if not m.enabled:
            return
        connected = _gauge("edgedet_mqtt_connected", "1 while connected to the broker")
        connected.add_metric([], 1.0 if m.connected else 0.0)
        yield connected
        counters = m.counters
        for key, name, doc in (
            ("sent", "edgedet_mqtt_messages_sent", "Messages acknowledged by (or written to) the broker"),
            ("dropped", "edgedet_mqtt_messages_dropped", "Non-durable messages not delivered"),
            ("errors", "edgedet_mqtt_publish_errors", "Messages that could not be built or handed over"),
            (
                "oversize",
                "edgedet_mqtt_messages_oversize",
                "Messages refused for exceeding max_payload_bytes",
            ),
            ("connects", "edgedet_mqtt_connects", "Successful connections to the broker"),
            ("connect_failures", "edgedet_mqtt_connect_failures", "Failed connection attempts"),
            ("outbox_dropped", "edgedet_outbox_dropped", "Durable messages dropped (outbox full or expired)"),
            ("outbox_not_persisted", "edgedet_outbox_not_persisted", "Durable messages kept in memory only"),
        ):
            value = counters.get(key)
            if value is not None:
                family = _counter(name, doc, [])
                family.add_metric([], float(value))
                yield family
        for key, name, doc in (
            (
                "outbox_depth",
                "edgedet_outbox_depth",
                "Durable messages waiting for the broker's acknowledgement",
            ),
            ("queued", "edgedet_mqtt_queued", "Non-durable QoS 1/2 messages waiting in the client's queue"),
            ("outbox_oldest_age_s", "edgedet_outbox_oldest_age_seconds", "Age of the oldest waiting message"),
        ):
            value = counters.get(key)
            if value is not None:
                gauge = _gauge(name, doc)
                gauge.add_metric([], float(value))
                yield gauge
        if m.outbox_mode is not None:
            mode = _gauge(
                "edgedet_outbox_mode", "Where durable messages are kept (1 for the current mode)", ["mode"]
            )
            mode.add_metric([m.outbox_mode], 1.0)
            yield mode

    def _telemetry(self, s: DaemonStatus, reading: Optional[Reading]) -> Iterator[Metric]:
        if s.telemetry is None:
            return
        temps = _gauge("edgedet_temperature_celsius", "Temperature per sensor", ["sensor"])
        rails = _gauge("edgedet_power_rail_watts", "Power per rail (current)", ["rail"])
        if reading is not None:
            for name, value in sorted(reading.temperatures.items()):
                if value is not None:
                    temps.add_metric([name], value)
            for name, (current, _avg) in sorted(reading.power_rails.items()):
                if current is not None:
                    rails.add_metric([name], current / 1000.0)
        yield from (temps, rails)
        t = s.telemetry
        for value, name, doc, scale in (
            (t.power_mw, "edgedet_power_watts", "Total input power of the device", 1e-3),
            (t.temp_max_c, "edgedet_temperature_max_celsius", "The hottest sensor (PMIC excluded)", 1.0),
            (t.gpu_load_pct, "edgedet_gpu_load_ratio", "GPU load, 0 to 1", 0.01),
            (t.mj_per_frame, "edgedet_energy_per_frame_joules", "Energy per processed frame", 1e-3),
        ):
            if value is not None:
                gauge = _gauge(name, doc)
                gauge.add_metric([], value * scale)
                yield gauge


class TrackingMetrics:
    """Tracks, zone occupancy and line counts, kept from the tracking stage's updates (a tracking sink:
    post-processing thread, and the supervisor's expiry checks) and read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracked: Dict[str, int] = {}
        self._zones: Dict[Tuple[str, str], Dict[str, int]] = {}
        self._lines: Dict[Tuple[str, str], Dict[str, Tuple[int, int]]] = {}

    def observe(self, update: TrackingUpdate) -> None:
        with self._lock:
            if update.result is not None:
                tracked = sum(1 for d in update.result.detections if d.track_id is not None)
                self._tracked[update.result.camera] = tracked
            for occ in update.occupancy:
                self._zones[(occ.camera, occ.zone)] = {c.label: int(c.count) for c in occ.counts}
            for line in update.lines:
                self._lines[(line.camera, line.line)] = {
                    c.label: (int(c.crossed_in), int(c.crossed_out)) for c in line.counts
                }

    def describe(self) -> List[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            tracked = dict(self._tracked)
            zones = {k: dict(v) for k, v in self._zones.items()}
            lines = {k: dict(v) for k, v in self._lines.items()}
        if not (tracked or zones or lines):
            return
        family = _gauge(
            "edgedet_tracked_objects", "Confirmed tracks in the camera's latest frame", ["camera"]
        )
        for camera, n in sorted(tracked.items()):
            family.add_metric([camera], n)
        yield family
        occupied = _gauge("edgedet_zone_occupancy", "Objects in the zone now", ["camera", "zone"])
        by_label = _gauge(
            "edgedet_zone_objects", "Objects in the zone now, by label", ["camera", "zone", "label"]
        )
        for (camera, zone), counts in sorted(zones.items()):
            occupied.add_metric([camera, zone], sum(counts.values()))
            for label, n in sorted(counts.items()):
                by_label.add_metric([camera, zone, label], n)
        yield from (occupied, by_label)
        crossings = _counter(
            "edgedet_line_crossings",
            "Crossings of the line by label and direction (totals kept across restarts)",
            ["camera", "line", "label", "direction"],
        )
        for (camera, line), totals in sorted(lines.items()):
            for label, (n_in, n_out) in sorted(totals.items()):
                crossings.add_metric([camera, line, label, "in"], n_in)
                crossings.add_metric([camera, line, label, "out"], n_out)
        yield crossings


# -- build info -----------------------------------------------------------------------------------
_DPKG_STATUS = Path("/var/lib/dpkg/status")
_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def dpkg_version(status_text: str, package: str) -> Optional[str]:
    """The installed version of ``package`` in a dpkg status file's text (pure)."""
    for block in status_text.split("\n\n"):
        if (
            re.search(rf"^Package: {re.escape(package)}$", block, re.MULTILINE)
            and "Status: install ok" in block
        ):
            m = re.search(r"^Version: (\S+)$", block, re.MULTILINE)
            if m:
                return m.group(1)
    return None


def l4t_release(text: str) -> Optional[str]:
    """``R35.4.1`` from /etc/nv_tegra_release's first line (``# R35 (release), REVISION: 4.1, ...``)."""
    m = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def tensorrt_version() -> str:
    """The loaded TensorRT's version ("" when the tensorrt backend has not imported it)."""
    trt = sys.modules.get("tensorrt")  # never imported from here: only the tensorrt backend does
    return str(getattr(trt, "__version__", "")) if trt is not None else ""


def platform_info() -> Dict[str, str]:
    """edgedet, Python, JetPack and L4T versions for ``edgedet_build_info``; "" where unknown."""
    info = {
        "version": __version__,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "jetpack": "",
        "l4t": "",
    }
    try:
        status = _DPKG_STATUS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        status = ""
    info["jetpack"] = (
        dpkg_version(status, "nvidia-jetpack") or dpkg_version(status, "nvidia-jetpack-core") or ""
    )
    with contextlib.suppress(OSError):
        info["l4t"] = l4t_release(_TEGRA_RELEASE.read_text(encoding="utf-8", errors="replace")) or ""
    return info


def make_registry(
    snapshot: Snapshot, reading: LatestReading, model: CurrentModel
) -> Tuple[CollectorRegistry, LatencyHistograms, TrackingMetrics]:
    """A registry of its own (not prometheus_client's global one, which tests and reloads would share)."""
    registry = CollectorRegistry(auto_describe=False)
    histograms = LatencyHistograms(registry, model)
    registry.register(SnapshotCollector(snapshot, reading))
    tracking = TrackingMetrics()
    registry.register(tracking)
    return registry, histograms, tracking
