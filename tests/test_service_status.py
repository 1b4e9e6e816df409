"""The status snapshot is built once from the real pipeline and read by the log line, systemd's STATUS= and
the MQTT stats message: a camera that is down shows the same reason and next retry in all three, and the
stats payload built from the snapshot passes the stats JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from edgedet.app import build_pipeline, start_pipeline, stop_pipeline
from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.config import parse_config
from edgedet.publish.messages import Envelope, build_stats
from edgedet.publish.schema import MessageValidator
from edgedet.service.status import CAMERA_DOWN, CAMERA_UP, StatusBuilder, log_line, stats_payload, status_line
from edgedet.sources.capture import CaptureState
from tests.support.broker import free_port
from tests.support.waiting import wait_for


def _config(tmp_path: Path) -> str:
    return (
        f"model: {{path: '{DEMO_MODEL}'}}\n"
        "backend: {type: onnxruntime, threads: 1}\n"
        f"state_dir: '{tmp_path / 'state'}'\n"
        "cameras:\n"
        f"  - {{name: street, max_fps: 5, source: {{type: file, path: '{DEMO_CLIP}'}}}}\n"
        f"  - name: door\n"
        f"    source: {{type: rtsp, url: 'rtsp://127.0.0.1:{free_port()}/cam', open_timeout_s: 1}}\n"
        "    reconnect: {initial_s: 5, max_s: 5}\n"
        "mqtt: {enabled: false}\n"
        "telemetry: {type: none}\n"
    )


def test_down_camera_reads_the_same_in_log_status_and_stats(tmp_path: Path) -> None:
    pipeline = build_pipeline(parse_config(_config(tmp_path)))
    start_pipeline(pipeline)
    builder = StatusBuilder()
    try:
        wait_for(lambda: pipeline.stats.published("street") >= 3, timeout=30, what="street detections")
        wait_for(
            lambda: pipeline.captures["door"].status().retry_in_s is not None,
            timeout=30,
            what="the door camera waiting for its next retry",
        )
        snapshot = builder.build(pipeline)
    finally:
        stop_pipeline(pipeline, 5.0)

    street, door = snapshot.camera("street"), snapshot.camera("door")
    assert street is not None and door is not None
    assert street.state == CAMERA_UP and street.frames_processed >= 3 and street.down_reason is None
    assert door.state == CAMERA_DOWN and door.capture_state == CaptureState.RECONNECTING.value
    assert door.down_reason is not None and "connection refused" in door.down_reason
    assert door.next_retry_in_s is not None and 0 <= door.next_retry_in_s <= 5
    assert snapshot.latency.inference is not None and snapshot.latency.inference.samples >= 3
    assert snapshot.model.backend == "onnxruntime" and snapshot.model.precision == "fp32"

    line, logged, payload = status_line(snapshot), log_line(snapshot), stats_payload(snapshot, 10.0)
    assert line.startswith("1/2 cameras up (street ")
    for text in (line, logged):
        assert door.down_reason in text and f"retry in {door.next_retry_in_s:.0f} s" in text
    cam = payload["cameras"]["door"]
    assert cam["last_error"] == door.down_reason and cam["retry_in_s"] == door.next_retry_in_s
    assert payload["cameras"]["street"]["frames_out"] == street.frames_processed
    assert payload["latency_ms"]["infer"]["n"] == snapshot.latency.inference.samples

    message = build_stats(Envelope("dev", 1, "epoch", 1_700_000_000.0), mqtt=_mqtt_counters(), **payload)
    assert MessageValidator().errors(message) == []
    assert message["cameras"]["door"]["retry_in_s"] == door.next_retry_in_s
    assert snapshot.as_dict()["cameras"][1]["name"] == "door"


def _mqtt_counters() -> Dict[str, Any]:
    keys = ("sent", "dropped", "queued", "oversize", "errors", "connects", "connect_failures")
    counters: Dict[str, Any] = {k: 0 for k in keys}
    counters.update(
        connected=True,
        last_error=None,
        outbox_depth=0,
        outbox_dropped=0,
        outbox_not_persisted=0,
        outbox_mode="sqlite",
    )
    return counters
