"""Builders of the versioned JSON messages edgedet publishes (pure: no I/O, no clock reads).

Every JSON message shares an envelope: ``type``, ``version`` (the contract's major version), ``id``
(unique per message, kept across replays), ``device_id``, ``seq`` and ``epoch`` (a gap-free counter per
stream and the identity of that counter), and ``publish_time``/``publish_ts_ms`` (when the message was
built). docs/messages.md is the contract; edgedet/schema/*.schema.json are its JSON Schemas.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from edgedet.tracking.values import LineCount, ObjectEvent, Occupancy, PresenceEvent
from edgedet.types import DetectionResult

SCHEMA_VERSION = 1
TYPES = ("detections", "event", "object", "occupancy", "line_count", "stats", "telemetry")
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


@dataclass(frozen=True)
class ModelInfo:
    """What produced the detections, as reported in every detections message."""

    name: str  # e.g. the model file's stem
    family: str  # yolox, yolov5, yolov8, efficient_nms
    precision: str  # fp32, fp16, int8
    backend: str  # onnxruntime, tensorrt
    input_width: int
    input_height: int


@dataclass(frozen=True)
class Envelope:
    """The fields every JSON message carries; ``seq`` and ``epoch`` come from the sequence store."""

    device_id: str
    seq: int
    epoch: str
    publish_time: float
    msg_id: str = ""

    def fields(self, kind: str) -> Dict[str, Any]:
        return {
            "type": kind,
            "version": SCHEMA_VERSION,
            "id": self.msg_id or new_message_id(),
            "device_id": self.device_id,
            "seq": self.seq,
            "epoch": self.epoch,
            "publish_time": iso_utc(self.publish_time),
            "publish_ts_ms": epoch_ms(self.publish_time),
        }


_ID_LOCK = threading.Lock()
_ID_STATE: Dict[str, int] = {"pid": -1, "prefix": 0, "n": 0}


def new_message_id() -> str:
    """32 hex digits: a random 64-bit prefix per process (renewed after a fork) and a counter.

    As unique as a UUID4 for this purpose, at a fraction of the cost (os.urandom per message showed
    up in profiles of the outbox benchmark)."""
    with _ID_LOCK:
        st = _ID_STATE
        if st["pid"] != os.getpid():
            st["pid"], st["prefix"], st["n"] = os.getpid(), uuid.uuid4().int >> 64, 0
        st["n"] += 1
        return f"{st['prefix']:016x}{st['n'] & 0xFFFFFFFFFFFFFFFF:016x}"


def iso_utc(t: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z suffix: 2024-05-01T12:00:00.123Z."""
    dt = datetime.fromtimestamp(t, timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(t: float) -> int:
    return round(t * 1000.0)


def _num(x: Optional[float], ndigits: int) -> Optional[float]:
    """A JSON-safe rounded number; NaN and infinities become null (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, ndigits)


def build_detections(
    result: DetectionResult,
    model: ModelInfo,
    env: Envelope,
) -> Dict[str, Any]:
    """One frame's detections: boxes as xyxy in source pixels and normalised to 0..1."""
    w = max(int(result.source_width), 1)
    h = max(int(result.source_height), 1)
    dets: List[Dict[str, Any]] = []
    for d in result.detections:
        dets.append(
            {
                "class_id": int(d.class_id),
                "class_name": str(d.class_name),
                "score": _num(d.score, 4),
                "box": [_num(d.x1, 1), _num(d.y1, 1), _num(d.x2, 1), _num(d.y2, 1)],
                "box_norm": [_num(d.x1 / w, 5), _num(d.y1 / h, 5), _num(d.x2 / w, 5), _num(d.y2 / h, 5)],
                "track_id": None if d.track_id is None else int(d.track_id),
            }
        )
    latency = {str(k): _num(v, 3) for k, v in result.timings_ms.items()}
    latency["capture_to_publish"] = _num((env.publish_time - result.capture_time) * 1000.0, 3)
    msg = env.fields("detections")
    msg.update(
        {
            "camera": result.camera,
            "frame_seq": int(result.seq),
            "capture_time": iso_utc(result.capture_time),
            "capture_ts_ms": epoch_ms(result.capture_time),
            "source": {"width": int(result.source_width), "height": int(result.source_height)},
            "model": {
                "name": model.name,
                "family": model.family,
                "precision": model.precision,
                "backend": model.backend,
                "input": {"width": int(model.input_width), "height": int(model.input_height)},
            },
            "latency_ms": latency,
            "count": len(dets),
            "detections": dets,
        }
    )
    return msg


def build_detections_message(
    result: DetectionResult,
    model: ModelInfo,
    device_id: str,
    seq: int,
    epoch: str = "local",
    publish_time: Optional[float] = None,
) -> Dict[str, Any]:
    """A detections message outside the publisher (``edgedet detect``, benchmarks): the caller
    numbers the messages; ``publish_time`` defaults to the capture time (no clock read here)."""
    t = result.capture_time if publish_time is None else publish_time
    return build_detections(result, model, Envelope(device_id, max(int(seq), 1), epoch, t))


def build_event(event: PresenceEvent, env: Envelope) -> Dict[str, Any]:
    msg = env.fields("event")
    msg.update(
        {
            "camera": event.camera,
            "event": event.event,
            "class_id": int(event.class_id),
            "class_name": event.class_name,
            "time": iso_utc(event.time),
            "ts_ms": epoch_ms(event.time),
            "frame_seq": None if event.frame_seq is None else int(event.frame_seq),
            "count": int(event.count),
            "score": _num(event.score, 4),
            "first_seen": iso_utc(event.first_seen),
            "last_seen": iso_utc(event.last_seen),
            "duration_s": _num(max(event.last_seen - event.first_seen, 0.0), 3),
        }
    )
    return msg


def build_object_event(event: ObjectEvent, env: Envelope) -> Dict[str, Any]:
    """One step of a tracked object's lifecycle (tracking/stage.py)."""
    w = max(int(event.frame_width), 1)
    h = max(int(event.frame_height), 1)
    x1, y1, x2, y2 = event.box
    until = event.end_time if event.end_time is not None else event.time
    msg = env.fields("object")
    msg.update(
        {
            "camera": event.camera,
            "event": event.event,
            "reasons": list(event.reasons),
            "track_id": int(event.track_id),
            "object_id": event.object_id,
            "class_id": int(event.class_id),
            "label": event.label,
            "score": _num(event.score, 4) or 0.0,
            "top_score": _num(event.top_score, 4) or 0.0,
            "box": [_num(x1, 1) or 0.0, _num(y1, 1) or 0.0, _num(x2, 1) or 0.0, _num(y2, 1) or 0.0],
            "box_norm": [
                _num(x1 / w, 5) or 0.0,
                _num(y1 / h, 5) or 0.0,
                _num(x2 / w, 5) or 0.0,
                _num(y2 / h, 5) or 0.0,
            ],
            "current_zones": list(event.current_zones),
            "entered_zones": list(event.entered_zones),
            "stationary": bool(event.stationary),
            "start_time": iso_utc(event.start_time),
            "start_ts_ms": epoch_ms(event.start_time),
            "end_time": None if event.end_time is None else iso_utc(event.end_time),
            "end_ts_ms": None if event.end_time is None else epoch_ms(event.end_time),
            "duration_s": _num(max(until - event.start_time, 0.0), 3) or 0.0,
            "time": iso_utc(event.time),
            "ts_ms": epoch_ms(event.time),
            "frame_seq": None if event.frame_seq is None else int(event.frame_seq),
            "has_snapshot": bool(event.has_snapshot),
        }
    )
    return msg


def build_occupancy(occupancy: Occupancy, env: Envelope) -> Dict[str, Any]:
    """Objects in one zone now, per label (retained)."""
    msg = env.fields("occupancy")
    counts = {c.label: int(c.count) for c in occupancy.counts}
    msg.update(
        {
            "camera": occupancy.camera,
            "zone": occupancy.zone,
            "counts": counts,
            "total": sum(counts.values()),
            "time": iso_utc(occupancy.time),
            "ts_ms": epoch_ms(occupancy.time),
        }
    )
    return msg


def build_line_count(count: LineCount, env: Envelope) -> Dict[str, Any]:
    """A line's in/out totals per label (retained), with the crossing that changed them."""
    msg = env.fields("line_count")
    last = None
    if count.last_direction is not None:
        last = {
            "track_id": int(count.last_track_id or 0),
            "label": count.last_label,
            "direction": count.last_direction,
        }
    msg.update(
        {
            "camera": count.camera,
            "line": count.line,
            "counts": {c.label: {"in": int(c.crossed_in), "out": int(c.crossed_out)} for c in count.counts},
            "total_in": sum(int(c.crossed_in) for c in count.counts),
            "total_out": sum(int(c.crossed_out) for c in count.counts),
            "last": last,
            "time": iso_utc(count.time),
            "ts_ms": epoch_ms(count.time),
        }
    )
    return msg


def percentiles(samples: Iterable[float]) -> Dict[str, Optional[float]]:
    """p50/p95 (nearest rank) and the sample count; None where there are no samples."""
    vals = sorted(float(v) for v in samples if v is not None and math.isfinite(float(v)))
    if not vals:
        return {"p50": None, "p95": None, "n": 0}

    def rank(p: float) -> float:
        i = min(len(vals) - 1, max(0, math.ceil(p / 100.0 * len(vals)) - 1))
        return vals[i]

    return {"p50": _num(rank(50), 3), "p95": _num(rank(95), 3), "n": len(vals)}


def latency_summary(samples_ms: Mapping[str, Sequence[float]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Per-stage p50/p95 from raw samples, ready for ``build_stats(latency_ms=...)``."""
    return {str(stage): percentiles(vals) for stage, vals in samples_ms.items()}


_CAMERA_COUNTERS = ("frames_in", "frames_out", "dropped")
_CAMERA_OPTIONAL_INTS = ("skipped", "corrupt", "reconnects")
_CAMERA_OPTIONAL_RATES = ("fps", "fps_in", "fps_out", "retry_in_s")
_CAMERA_OPTIONAL_TEXT = ("last_error", "error")
_STATS_OBJECTS = ("power", "throttle")


def _camera_stats(c: Mapping[str, Any]) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"state": str(c.get("state", "unknown"))}
    for key in _CAMERA_COUNTERS:
        entry[key] = int(c.get(key, 0) or 0)
    for key in _CAMERA_OPTIONAL_INTS:
        if key in c:
            entry[key] = int(c[key] or 0)
    for key in _CAMERA_OPTIONAL_RATES:
        if key in c:
            entry[key] = _num(c[key], 2)
    for key in _CAMERA_OPTIONAL_TEXT:
        if key in c:
            entry[key] = None if c[key] is None else str(c[key])
    known = {
        "state",
        *_CAMERA_COUNTERS,
        *_CAMERA_OPTIONAL_INTS,
        *_CAMERA_OPTIONAL_RATES,
        *_CAMERA_OPTIONAL_TEXT,
    }
    rest = {k: v for k, v in c.items() if k not in known}
    if rest:
        entry["extra"] = _jsonable(rest)
    return entry


def _pct(p: Mapping[str, Any], key: str) -> Optional[float]:
    # "p50" (latency_summary here) or "p50_ms" (the pipeline's LatencyRecorder)
    value = p.get(key, p.get(f"{key}_ms"))
    return _num(value, 3)


def build_stats(
    env: Envelope,
    cameras: Mapping[str, Mapping[str, Any]],
    latency_ms: Mapping[str, Mapping[str, Any]],
    mqtt: Mapping[str, Any],
    interval_s: Optional[float] = None,
    uptime_s: Optional[float] = None,
    extra: Optional[Mapping[str, Any]] = None,
    model: Optional[Any] = None,
    power: Optional[Mapping[str, Any]] = None,
    throttle: Optional[Mapping[str, Any]] = None,
    config_error: Optional[str] = None,
) -> Dict[str, Any]:
    """Periodic statistics.

    ``cameras``: name -> {state, frames_in, frames_out, dropped; optional skipped, corrupt, reconnects,
    fps, fps_in, fps_out, last_error} (other keys go to the camera's ``extra``); ``latency_ms``: stage ->
    {p50, p95, n} (or p50_ms/p95_ms); ``mqtt``: the publisher's counters; ``model``: a ModelInfo or
    its dict; ``power``/``throttle``: the telemetry helpers' summaries, passed through.
    """
    lat: Dict[str, Dict[str, Any]] = {}
    for stage, p in latency_ms.items():
        lat[str(stage)] = {"p50": _pct(p, "p50"), "p95": _pct(p, "p95"), "n": int(p.get("n", 0) or 0)}
    msg = env.fields("stats")
    msg.update(
        {
            "interval_s": _num(interval_s, 3),
            "uptime_s": _num(uptime_s, 1),
            "cameras": {str(name): _camera_stats(c) for name, c in cameras.items()},
            "latency_ms": lat,
            "mqtt": _jsonable(dict(mqtt)),
        }
    )
    if model is not None:
        m = _jsonable(model)
        msg["model"] = {
            k: m.get(k) for k in ("name", "family", "precision", "backend", "input_width", "input_height")
        }
    for key, value in (("power", power), ("throttle", throttle)):
        if value is not None:
            msg[key] = _jsonable(value)
    if config_error is not None:
        msg["config_error"] = str(config_error)
    if extra:
        msg["extra"] = _jsonable(extra)
    return msg


def build_telemetry(env: Envelope, readings: Any, source: Optional[str] = None) -> Dict[str, Any]:
    """Power/thermal readings; ``readings`` is the reader's dict (or dataclass), passed through."""
    msg = env.fields("telemetry")
    body = _jsonable(readings)
    if not isinstance(body, dict):
        body = {"value": body}
    msg.update({"source": source, "readings": body})
    return msg


def _jsonable(obj: Any) -> Any:
    """Dataclasses, mappings, sequences and numbers made JSON-safe (non-finite floats -> null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    # numpy scalars and anything else with a numeric value
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    if not math.isfinite(f):
        return None
    return int(f) if f.is_integer() and "int" in type(obj).__name__ else f


def encode(msg: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; raises ValueError on NaN (the builders never produce one)."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def stream_key(kind: str, camera: Optional[str] = None, name: Optional[str] = None) -> str:
    """The sequence-number stream of a message class (per camera for detections and events; per
    camera and zone/line for occupancy and line counts)."""
    key = f"{kind}/{camera}" if camera else kind
    return f"{key}/{name}" if name else key
