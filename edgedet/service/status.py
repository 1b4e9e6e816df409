"""One typed snapshot of the running daemon, built once per supervisor pass and read by every reporter.

``StatusBuilder.build()`` turns the live stages (captures, frame counters, latencies, publisher,
telemetry, throttle, watchdog) into a ``DaemonStatus`` of frozen dataclasses. The log line
(``log_line``), systemd's ``STATUS=`` (``status_line``) and the MQTT stats message (``stats_payload``)
are pure functions of that snapshot, so they never disagree; the HTTP/metrics side reads the same object
(``Daemon.status``) from its own thread: a snapshot is immutable, replaced as a whole.

Camera states in the snapshot:

* ``starting``: the first opening is in progress;
* ``up``: frames arrive;
* ``down``: the source failed, stalled or cannot be opened yet; ``down_reason`` says why and
  ``next_retry_in_s`` when the next attempt is (retried forever with capped backoff);
* ``ended``: a file played once has ended.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from edgedet.sources.capture import CaptureState, CaptureStatus
from edgedet.telemetry.energy import stats_summary

if TYPE_CHECKING:
    from edgedet.app import Pipeline
    from edgedet.publish.mqtt import MqttPublisher
    from edgedet.service.watchdog import WatchdogPinger
    from edgedet.telemetry.base import TelemetryReader
    from edgedet.telemetry.throttle import ThrottlePolicy

CAMERA_UP = "up"
CAMERA_DOWN = "down"
CAMERA_STARTING = "starting"
CAMERA_ENDED = "ended"

_CAMERA_STATE = {
    CaptureState.STARTING: CAMERA_STARTING,
    CaptureState.STREAMING: CAMERA_UP,
    CaptureState.STALLED: CAMERA_DOWN,
    CaptureState.RECONNECTING: CAMERA_DOWN,
    CaptureState.FAILED: CAMERA_DOWN,
    CaptureState.ENDED: CAMERA_ENDED,
}

RATE_WINDOW_S = 5.0  # drop rates are measured over at least this many seconds


@dataclass(frozen=True)
class CameraStatus:
    name: str
    state: str  # up | down | starting | ended (see the module docstring)
    capture_state: str  # the capture stage's own state: streaming, stalled, reconnecting, failed ...
    source: str  # what is read, passwords removed
    down_reason: Optional[str]  # why the camera is down (None while up)
    next_retry_in_s: Optional[float]  # seconds to the next opening attempt, while waiting for one
    fps_in: float  # frames read from the source per second (last couple of seconds)
    fps_processed: Optional[float]  # frames inferred and published per second (None: none yet)
    fps_dropped: float  # frames read but not processed per second (slot replaced, no buffer, ...)
    frames_in: int  # frames read since the capture stage started
    frames_processed: int  # frames whose detections were published
    frames_dropped: int  # read but not processed: inference busy or every buffer held
    frames_skipped: int  # left out on purpose by the frame-rate cap
    frames_corrupt: int  # failed reads and unusable frames
    reconnects: int  # opening attempts after the first one
    capture_restarts: int  # times the supervisor replaced a crashed capture thread
    last_error: Optional[str]  # the latest problem, kept after the camera came back
    last_frame_age_s: Optional[float]
    max_fps: Optional[float]  # the frame-rate cap in force (config and thermal throttle combined)
    objects_in_view: Mapping[str, int]  # most objects per class in one frame since the last stats report

    @property
    def up(self) -> bool:
        return self.state == CAMERA_UP


@dataclass(frozen=True)
class StageLatency:
    p50_ms: float
    p95_ms: float
    samples: int


@dataclass(frozen=True)
class LatencyStatus:
    """Per-stage latencies over the recent frames; None until a frame went through."""

    preprocess: Optional[StageLatency]
    wait: Optional[StageLatency]  # prepared frame waiting in its slot for the inference worker
    inference: Optional[StageLatency]
    decode: Optional[StageLatency]
    publish: Optional[StageLatency]
    capture_to_publish: Optional[StageLatency]


@dataclass(frozen=True)
class ModelStatus:
    name: str
    family: str
    precision: str  # fp32 | fp16 | int8
    backend: str  # onnxruntime | tensorrt | ...
    input_width: int
    input_height: int
    inference_workers: int


@dataclass(frozen=True)
class MqttStatus:
    enabled: bool
    connected: bool
    last_error: Optional[str]
    outbox_depth: Optional[int]  # durable messages waiting in the outbox (None: unknown/disabled)
    outbox_mode: Optional[str]  # sqlite | memory
    sent: Optional[int]
    dropped: Optional[int]
    counters: Mapping[str, Any]  # every counter of the publisher's public status, as it reports them


@dataclass(frozen=True)
class TelemetryStatus:
    source: Optional[str]  # tegrastats | jtop | nvml | sysfs ...; None: no reading yet
    power_mw: Optional[float]
    power_source: Optional[str]
    temp_max_c: Optional[float]
    temp_max_sensor: Optional[str]
    gpu_load_pct: Optional[float]
    mj_per_frame: Optional[float]
    fps_per_w: Optional[float]


@dataclass(frozen=True)
class ThrottleStatus:
    state: str  # disabled | normal | no-sensor | step1 ...
    max_fps: Optional[float]  # the cap in force, None: none
    reason: str
    temperature_c: Optional[float]


@dataclass(frozen=True)
class WatchdogStatus:
    enabled: bool  # systemd asked for pings (WatchdogSec=)
    healthy: bool  # the pings go out: inference and post-processing make progress
    reason: str
    pings: int
    withheld: int


@dataclass(frozen=True)
class DaemonStatus:
    time: float  # wall clock (time.time()) when the snapshot was built
    uptime_s: float
    phase: str  # running | reloading | stopping
    cameras: Tuple[CameraStatus, ...]
    latency: LatencyStatus
    model: ModelStatus
    mqtt: MqttStatus
    telemetry: Optional[TelemetryStatus]  # None: telemetry disabled
    throttle: Optional[ThrottleStatus]  # None: no thermal policy
    watchdog: WatchdogStatus
    config_error: Optional[str]  # why the last reload was refused (the previous config keeps running)
    fps_processed_total: float

    @property
    def cameras_up(self) -> Tuple[CameraStatus, ...]:
        return tuple(c for c in self.cameras if c.up)

    def camera(self, name: str) -> Optional[CameraStatus]:
        return next((c for c in self.cameras if c.name == name), None)

    def as_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data (for /status and tests)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- building -------------------------------------------------------------------------------------------
def _latency(summary: Mapping[str, Mapping[str, Any]], stage: str) -> Optional[StageLatency]:
    p = summary.get(stage)
    if not p:
        return None
    return StageLatency(float(p["p50_ms"]), float(p["p95_ms"]), int(p["n"]))


def _int_or_none(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(value, digits)


class StatusBuilder:
    """Builds snapshots; keeps the previous counters so that drop rates cover a few seconds."""

    def __init__(self) -> None:
        self._dropped: Dict[str, Tuple[float, int]] = {}  # camera -> (monotonic, dropped) at window start
        self._drop_rate: Dict[str, float] = {}

    def build(
        self,
        pipeline: Pipeline,
        publisher: Optional[MqttPublisher] = None,
        telemetry: Optional[TelemetryReader] = None,
        throttle: Optional[ThrottlePolicy] = None,
        pinger: Optional[WatchdogPinger] = None,
        config_error: Optional[str] = None,
        capture_restarts: Optional[Mapping[str, int]] = None,
        phase: str = "running",
    ) -> DaemonStatus:
        now = time.monotonic()
        stats = pipeline.stats
        restarts = capture_restarts or {}
        cameras = []
        for name, st in pipeline.capture_statuses().items():
            dropped = pipeline.frames_dropped(name) + st.frames_dropped_pool + st.frames_dropped_behind
            cameras.append(
                self._camera(
                    st,
                    dropped,
                    processed=stats.published(name),
                    fps_processed=stats.fps(name),
                    restarts=restarts.get(name, 0),
                    in_view=stats.peek_in_view(name),
                    now=now,
                )
            )
        for gone in set(self._dropped) - {c.name for c in cameras}:
            self._dropped.pop(gone, None)
            self._drop_rate.pop(gone, None)
        total_fps = stats.total_fps()
        summary = stats.latency_summary()
        info = pipeline.model.model_info
        return DaemonStatus(
            time=time.time(),
            uptime_s=round(now - stats.started, 1),
            phase=phase,
            cameras=tuple(cameras),
            latency=LatencyStatus(
                preprocess=_latency(summary, "preprocess"),
                wait=_latency(summary, "wait"),
                inference=_latency(summary, "infer"),
                decode=_latency(summary, "decode"),
                publish=_latency(summary, "publish"),
                capture_to_publish=_latency(summary, "capture_to_publish"),
            ),
            model=ModelStatus(
                name=info.name,
                family=info.family,
                precision=info.precision,
                backend=info.backend,
                input_width=info.input_width,
                input_height=info.input_height,
                inference_workers=len(pipeline.inference),
            ),
            mqtt=_mqtt(publisher),
            telemetry=_telemetry(telemetry, total_fps),
            throttle=_throttle(throttle),
            watchdog=_watchdog(pinger),
            config_error=config_error,
            fps_processed_total=round(total_fps, 2),
        )

    def _camera(
        self,
        st: CaptureStatus,
        dropped: int,
        processed: int,
        fps_processed: Optional[float],
        restarts: int,
        in_view: Mapping[str, int],
        now: float,
    ) -> CameraStatus:
        state = _CAMERA_STATE.get(st.state, CAMERA_DOWN)
        start = self._dropped.get(st.camera)
        if start is None or dropped < start[1]:  # first sight, or a replaced capture stage
            self._dropped[st.camera] = (now, dropped)
        elif now - start[0] >= RATE_WINDOW_S:
            self._drop_rate[st.camera] = (dropped - start[1]) / (now - start[0])
            self._dropped[st.camera] = (now, dropped)
        return CameraStatus(
            name=st.camera,
            state=state,
            capture_state=st.state.value,
            source=st.source,
            down_reason=(st.last_error or st.state.value) if state == CAMERA_DOWN else None,
            next_retry_in_s=_round(st.retry_in_s, 1) if state != CAMERA_UP else None,
            fps_in=round(st.fps, 2),
            fps_processed=_round(fps_processed),
            fps_dropped=round(self._drop_rate.get(st.camera, 0.0), 2) if state == CAMERA_UP else 0.0,
            frames_in=st.frames_read,
            frames_processed=processed,
            frames_dropped=dropped,
            frames_skipped=st.frames_skipped,
            frames_corrupt=st.frames_corrupt,
            reconnects=st.reconnects,
            capture_restarts=restarts,
            last_error=st.last_error,
            last_frame_age_s=_round(st.last_frame_age_s, 1),
            max_fps=st.max_fps,
            objects_in_view=dict(in_view),
        )


def _mqtt(publisher: Optional[MqttPublisher]) -> MqttStatus:
    if publisher is None:
        return MqttStatus(False, False, None, None, None, None, None, {})
    # the publisher's public status dict: its field names are its own (the outbox may rename some)
    counters = dict(publisher.status_payload())
    mode = counters.get("outbox_mode")
    return MqttStatus(
        enabled=True,
        connected=bool(counters.get("connected", publisher.connected)),
        last_error=counters.get("last_error"),
        outbox_depth=_int_or_none(counters.get("outbox_depth")),
        outbox_mode=None if mode is None else str(mode),
        sent=_int_or_none(counters.get("sent")),
        dropped=_int_or_none(counters.get("dropped")),
        counters=counters,
    )


def _telemetry(reader: Optional[TelemetryReader], fps: float) -> Optional[TelemetryStatus]:
    if reader is None:
        return None
    s = stats_summary(reader.latest(), fps)
    return TelemetryStatus(
        source=s.get("telemetry_source"),
        power_mw=s.get("power_mw"),
        power_source=s.get("power_source"),
        temp_max_c=s.get("temp_max_c"),
        temp_max_sensor=s.get("temp_max_sensor"),
        gpu_load_pct=s.get("gpu_load_pct"),
        mj_per_frame=s.get("mj_per_frame"),
        fps_per_w=s.get("fps_per_w"),
    )


def _throttle(policy: Optional[ThrottlePolicy]) -> Optional[ThrottleStatus]:
    if policy is None:
        return None
    p = policy.state_payload()
    return ThrottleStatus(
        state=str(p.get("state")),
        max_fps=p.get("max_fps"),
        reason=str(p.get("reason", "")),
        temperature_c=p.get("temperature_c"),
    )


def _watchdog(pinger: Optional[WatchdogPinger]) -> WatchdogStatus:
    if pinger is None or not pinger.enabled:
        return WatchdogStatus(False, True, "no systemd watchdog", 0, 0)
    return WatchdogStatus(True, pinger.healthy, pinger.reason, pinger.pings, pinger.withheld)


# -- reading ------------------------------------------------------------------------------------------
def _retry(c: CameraStatus) -> str:
    # no next retry while an attempt to open the camera is under way
    return "retrying now" if c.next_retry_in_s is None else f"retry in {c.next_retry_in_s:.0f} s"


def _camera_phrase(c: CameraStatus) -> str:
    if c.state == CAMERA_UP:
        return f"{c.name} {c.fps_processed or 0.0:.1f} fps"
    if c.state == CAMERA_DOWN:
        return f"{c.name} down ({c.down_reason}, {_retry(c)})"
    return f"{c.name} {c.state}"


def status_line(s: DaemonStatus) -> str:
    """systemd's STATUS=: cameras up with their rates, cameras down with reason and next retry."""
    up = s.cameras_up
    rates = ", ".join(_camera_phrase(c) for c in up)
    text = f"{len(up)}/{len(s.cameras)} cameras up" + (f" ({rates})" if rates else "")
    text += f"; {s.model.backend} {s.model.precision}"
    others = [_camera_phrase(c) for c in s.cameras if not c.up]
    if others:
        text += "; " + "; ".join(others)
    if s.mqtt.enabled and not s.mqtt.connected:
        text += "; MQTT disconnected"
    if s.throttle is not None and s.throttle.max_fps is not None:
        text += f"; throttled to {s.throttle.max_fps:g} fps ({s.throttle.reason})"
    if s.config_error:
        text += f"; config reload rejected, running the last good config: {s.config_error}"
    return text


def status_key(s: DaemonStatus) -> str:
    """The STATUS line without the rates: a change here is sent at once, rates only now and then."""
    parts = [f"{c.name}={c.state}:{c.down_reason}" for c in s.cameras]
    return "|".join([*parts, str(s.mqtt.connected), str(s.config_error), str(s.throttle)])


def log_line(s: DaemonStatus) -> str:
    """The periodic stats log line: per camera state, rates, drops and what is in view."""
    parts = []
    for c in s.cameras:
        top = ", ".join(f"{n} {k}" for n, k in sorted(c.objects_in_view.items(), key=lambda kv: -kv[1])[:4])
        text = (
            f"{c.name}: {c.capture_state} {c.fps_processed or 0.0:.1f} fps {c.frames_processed} out "
            f"{c.frames_dropped} dropped"
        )
        if c.state == CAMERA_DOWN:
            text += f" ({c.down_reason}, {_retry(c)})"
        parts.append(text + (f"; in view: {top}" if top else ""))
    line = " | ".join(parts) if parts else "no cameras"
    lat = s.latency.capture_to_publish
    if lat is not None:
        line += f" | capture-to-publish p50 {lat.p50_ms:.0f} ms p95 {lat.p95_ms:.0f} ms"
    if s.mqtt.enabled:
        line += f" | mqtt {'connected' if s.mqtt.connected else 'disconnected'}"
        if s.mqtt.outbox_depth:
            line += f", outbox {s.mqtt.outbox_depth}"
    return line


def _latency_payload(latency: LatencyStatus) -> Dict[str, Dict[str, Any]]:
    names = {"inference": "infer"}  # the stats message's stage names predate the snapshot
    out: Dict[str, Dict[str, Any]] = {}
    for f in dataclasses.fields(latency):
        value = getattr(latency, f.name)
        if value is not None:
            out[names.get(f.name, f.name)] = {"p50": value.p50_ms, "p95": value.p95_ms, "n": value.samples}
    return out


def stats_payload(s: DaemonStatus, interval_s: Optional[float] = None) -> Dict[str, Any]:
    """The payload for ``MqttPublisher.publish_stats`` (the publisher adds its own ``mqtt`` counters)."""
    cameras: Dict[str, Any] = {}
    for c in s.cameras:
        cameras[c.name] = {
            "state": c.capture_state,
            "frames_in": c.frames_in,
            "frames_out": c.frames_processed,
            "dropped": c.frames_dropped,
            "skipped": c.frames_skipped,
            "corrupt": c.frames_corrupt,
            "reconnects": c.reconnects,
            "fps": c.fps_processed,
            "fps_in": c.fps_in,
            "fps_out": c.fps_processed,
            "last_error": c.down_reason if c.state == CAMERA_DOWN else c.last_error,
            "retry_in_s": c.next_retry_in_s,
        }
    payload: Dict[str, Any] = {
        "uptime_s": s.uptime_s,
        "cameras": cameras,
        "latency_ms": _latency_payload(s.latency),
        "model": {
            "name": s.model.name,
            "family": s.model.family,
            "precision": s.model.precision,
            "backend": s.model.backend,
            "input_width": s.model.input_width,
            "input_height": s.model.input_height,
        },
    }
    if interval_s is not None:
        payload["interval_s"] = interval_s
    if s.telemetry is not None:
        t = s.telemetry
        payload["power"] = {
            "telemetry_source": t.source,
            "power_mw": t.power_mw,
            "power_source": t.power_source,
            "temp_max_c": t.temp_max_c,
            "temp_max_sensor": t.temp_max_sensor,
            "gpu_load_pct": t.gpu_load_pct,
            "mj_per_frame": t.mj_per_frame,
            "fps_per_w": t.fps_per_w,
        }
    if s.throttle is not None:
        payload["throttle"] = dataclasses.asdict(s.throttle)
    if s.config_error is not None:
        payload["config_error"] = s.config_error
    return payload
