"""The message contract: every builder's output validates against the shipped JSON Schemas."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import jsonschema
import numpy as np
import pytest
from pydantic import ValidationError

from edgedet.publish import messages as m
from edgedet.publish.config import MqttConfig
from edgedet.publish.schema import SCHEMA_DIR, MessageValidator, load_schema
from edgedet.types import Detection, DetectionResult
from tests.support.mqtt_helpers import MODEL, result

ENV = m.Envelope("jetson-01", 42, "0123456789ab", 1_700_000_000.25)


@pytest.fixture(scope="module")
def validator() -> MessageValidator:
    return MessageValidator()


def test_schema_files_are_valid_draft_2020_12() -> None:
    names = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert names == [
        "detections.schema.json",
        "event.schema.json",
        "line_count.schema.json",
        "object.schema.json",
        "occupancy.schema.json",
        "stats.schema.json",
        "status.schema.json",
        "telemetry.schema.json",
    ]
    for p in SCHEMA_DIR.glob("*.schema.json"):
        schema = json.loads(p.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_detections_message_validates_and_maps_boxes(validator: MessageValidator) -> None:
    r = DetectionResult(
        "front-door",
        17,
        1_700_000_000.0,
        0.0,
        1920,
        1080,
        (Detection(96.0, 54.0, 960.0, 1080.0, 0.91234, 0, "person"), Detection(0, 0, 10, 10, 0.5, 2, "car")),
        {"preprocess": 2.0, "inference": 31.5, "decode": 0.8},
    )
    msg = m.build_detections(r, MODEL, ENV)
    assert validator.errors(msg) == []
    assert msg["seq"] == 42 and msg["frame_seq"] == 17 and msg["count"] == 2
    assert msg["capture_time"] == "2023-11-14T22:13:20.000Z" and msg["capture_ts_ms"] == 1_700_000_000_000
    assert msg["publish_ts_ms"] == 1_700_000_000_250
    assert msg["latency_ms"]["capture_to_publish"] == 250.0
    d = msg["detections"][0]
    assert d["box"] == [96.0, 54.0, 960.0, 1080.0]
    assert d["box_norm"] == [0.05, 0.05, 0.5, 1.0]
    assert d["score"] == 0.9123
    assert msg["model"] == {
        "name": "yolox_nano",
        "family": "yolox",
        "precision": "fp32",
        "backend": "onnxruntime",
        "input": {"width": 416, "height": 416},
    }


def test_empty_frame_and_non_finite_timings_stay_valid_json(validator: MessageValidator) -> None:
    r = DetectionResult(
        "cam1", 0, time.time(), 0.0, 640, 480, (), {"inference": math.nan, "decode": math.inf}
    )
    msg = m.build_detections(r, MODEL, m.Envelope("d", 1, "e", time.time()))
    assert msg["latency_ms"]["inference"] is None and msg["latency_ms"]["decode"] is None
    assert validator.errors(msg) == []
    assert b"NaN" not in m.encode(msg)
    with pytest.raises(ValueError):
        m.encode({"x": math.nan})


def test_event_stats_telemetry_validate(validator: MessageValidator) -> None:
    t = 1_700_000_000.0
    ev = m.build_event(m.PresenceEvent("cam1", "appeared", 0, "person", t, 5, 2, 0.8, t - 2, t), ENV)
    assert validator.errors(ev) == [] and ev["duration_s"] == 2.0
    cl = m.build_event(m.PresenceEvent("cam1", "cleared", 0, "person", t, None, 0, None, t - 9, t - 4), ENV)
    assert validator.errors(cl) == []
    lat = m.latency_summary({"inference": [10.0 + i for i in range(100)], "decode": []})
    assert lat["inference"] == {"p50": 59.0, "p95": 104.0, "n": 100}
    assert lat["decode"] == {"p50": None, "p95": None, "n": 0}
    mqtt_counters = {
        "connected": True,
        "last_error": None,
        "sent": 3,
        "dropped": 0,
        "queued": 0,
        "oversize": 0,
        "errors": 0,
        "connects": 1,
        "connect_failures": 0,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "outbox_not_persisted": 0,
        "outbox_mode": "sqlite",
    }
    st = m.build_stats(
        ENV,
        {"cam1": {"state": "running", "frames_in": 100, "frames_out": 90, "dropped": 10, "fps_in": 10.0}},
        lat,
        mqtt_counters,
        interval_s=10.0,
        uptime_s=3600.0,
    )
    assert validator.errors(st) == []

    @dataclass
    class Reading:
        tj_c: float
        rails: dict

    tel = m.build_telemetry(
        ENV, Reading(np.float32(45.5), {"VDD_IN": np.int64(4200), "bad": math.nan}), "sysfs"
    )
    assert validator.errors(tel) == []
    assert tel["readings"] == {"tj_c": 45.5, "rails": {"VDD_IN": 4200, "bad": None}}
    json.dumps(tel, allow_nan=False)
    assert validator.errors("online") == [] and validator.errors("offline") == []
    assert validator.errors("maybe") != []


def test_schema_catches_contract_breaks(validator: MessageValidator) -> None:
    msg = m.build_detections(result("cam1", 1), MODEL, ENV)
    broken = dict(msg, seq=0)
    assert validator.errors(broken)
    extra = dict(msg, surprise=1)
    assert any("surprise" in e for e in validator.errors(extra))
    no_box = json.loads(json.dumps(msg))
    del no_box["detections"][0]["box_norm"]
    assert validator.errors(no_box)
    assert load_schema("event")["properties"]["event"]["enum"] == ["appeared", "cleared"]


def test_message_ids_unique_and_kept_when_given() -> None:
    a = m.build_event(
        m.PresenceEvent("c", "appeared", 0, "p", 1.0, 1, 1, 0.5, 1.0, 1.0), m.Envelope("d", 1, "e", 1.0)
    )
    b = m.build_event(
        m.PresenceEvent("c", "appeared", 0, "p", 1.0, 1, 1, 0.5, 1.0, 1.0), m.Envelope("d", 1, "e", 1.0)
    )
    assert a["id"] != b["id"]
    c = m.build_event(
        m.PresenceEvent("c", "appeared", 0, "p", 1.0, 1, 1, 0.5, 1.0, 1.0),
        m.Envelope("d", 1, "e", 1.0, msg_id="x1"),
    )
    assert c["id"] == "x1"


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (
            {"messages": {"events": {"topic": "{camera}/events", "qos": 0, "durable": True}}},
            "durable messages need qos 1",
        ),
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
        ({"max_payload_bytes": 300_000_000}, "max_payload_bytes"),
        ({"topic_prefix": "site/#"}, "topic_prefix"),
        ({"topic_prefix": "$SYS"}, "topic_prefix"),
        ({"messages": {"stats": {"topic": "/stats"}}}, "topic"),
        ({"messages": {"detections": {"topic": "detections"}}}, "must contain {camera}"),
        (
            {"messages": {"status": {"topic": "status", "durable": True, "qos": 1}}},
            "status cannot be durable",
        ),
        ({"messages": {"stats": {"topic": "status"}}}, "own topic"),
        ({"reconnect_min_s": 30, "reconnect_max_s": 5}, "reconnect_min_s"),
        ({"outbox": {"when_full": "block"}}, "when_full"),
        ({"outbox": {"max_messages": 0}}, "max_messages"),
        ({"events": {"min_frames": 6, "window_frames": 5}}, "min_frames"),
        ({"qos": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_with_the_key(settings: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        MqttConfig.model_validate(settings)
    assert needle in str(exc.value)


def test_stats_from_the_daemons_payload_shape_validates(validator: MessageValidator) -> None:
    # what service/daemon.py builds: LatencyRecorder's p50_ms/p95_ms, ModelInfo, power/throttle summaries
    payload_cams = {
        "front": {
            "state": "streaming",
            "frames_in": 120,
            "frames_out": 100,
            "dropped": 20,
            "skipped": 0,
            "corrupt": 1,
            "reconnects": 2,
            "fps": 9.9,
            "last_error": None,
            "future_field": 7,
        }
    }
    st = m.build_stats(
        ENV,
        payload_cams,
        {"inference": {"p50_ms": 20.5, "p95_ms": 31.0, "n": 100}},
        {
            **dict.fromkeys(
                ("sent", "dropped", "queued", "oversize", "errors", "connects", "connect_failures"), 0
            ),
            **{"connected": False, "last_error": None, "outbox_depth": 0, "outbox_dropped": 0},
            **{"outbox_not_persisted": 0, "outbox_mode": "sqlite"},
        },
        uptime_s=12.0,
        model=MODEL,
        power={"power_mw": None, "fps_per_w": None},
        throttle={"state": "disabled", "max_fps": None},
        config_error="line 3: unknown key",
        extra={"whatever": [1, 2]},
    )
    assert validator.errors(st) == []
    assert st["latency_ms"]["inference"] == {"p50": 20.5, "p95": 31.0, "n": 100}
    assert st["cameras"]["front"]["extra"] == {"future_field": 7}
    assert st["model"]["input_width"] == 416


def test_standalone_detections_message_for_detect_and_bench(validator: MessageValidator) -> None:
    r = result("cam1", 3, ["person"], t=1_700_000_000.0)
    msg = m.build_detections_message(r, MODEL, device_id="bench", seq=0)
    assert validator.errors(msg) == []
    assert msg["seq"] == 1 and msg["publish_ts_ms"] == msg["capture_ts_ms"] == 1_700_000_000_000
