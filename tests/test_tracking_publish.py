"""The tracking stage's output through the real publisher to a real mosquitto: topics per zone, line
and label; a retained binary snapshot that `edgedet watch --check` accepts as such."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgedet.publish.mqtt import MqttPublisher
from edgedet.tracking.config import CameraZones, PresenceConfig, TrackingConfig
from edgedet.tracking.stage import Tracking
from edgedet.types import Detection, DetectionResult
from tests.support.daemon_harness import DEVICE, Subscriber
from tests.support.mqtt_helpers import MODEL, publisher_cfg, subscriber, wait_for


def test_tracking_messages_reach_their_topics_and_watch_takes_snapshots_as_binary(
    mosquitto: Any, tmp_path: Path
) -> None:
    pytest.importorskip("cv2")
    scene = CameraZones.model_validate(
        {
            "zones": [{"name": "yard", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
            "lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]]}],
        }
    )
    tracking = Tracking(TrackingConfig(cameras={"cam": scene}), PresenceConfig(), tmp_path / "state")
    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    pub = MqttPublisher(publisher_cfg(mosquitto.port), DEVICE, tmp_path / "state")
    watcher = subscriber(mosquitto.port, check=True, validate=True)
    raw = Subscriber(mosquitto)
    pub.start()
    try:
        assert wait_for(lambda: pub.connected)
        for i in range(6):
            det = Detection(300.0, 100.0 + 10 * i, 340.0, 200.0 + 10 * i, 0.9, 9, "traffic light")
            result = DetectionResult("cam", i, 1000.0 + i * 0.1, 0.0, 640, 480, (det,), {}, image)
            pub.publish_tracking(tracking.process(result), MODEL)
        topics = {
            f"edgedet/{DEVICE}/cam/traffic_light/snapshot",  # the label made topic-safe
            f"edgedet/{DEVICE}/cam/zones/yard",
            f"edgedet/{DEVICE}/cam/lines/gate",
            f"edgedet/{DEVICE}/cam/objects",
        }
        wait_for(lambda: topics <= {t for _, t, _, _ in raw.messages}, 10, f"messages on {sorted(topics)}")
        wait_for(lambda: watcher.report_data.by_type.get("snapshot"), 10, "the watcher to see the snapshot")
    finally:
        pub.stop(2.0)
        report = watcher.stop()
        raw.close()
    snapshot = [(p, retained) for _, t, p, retained in raw.messages if t.endswith("/snapshot")]
    assert snapshot[0][0][:2] == b"\xff\xd8"  # a JPEG
    late = Subscriber(mosquitto)  # arrives after the fact: gets the retained picture and counts
    try:
        wait_for(
            lambda: any(t.endswith("/snapshot") and r for _, t, _, r in late.messages),
            10,
            "retained snapshot",
        )
        wait_for(
            lambda: any(t.endswith("/lines/gate") and r for _, t, _, r in late.messages), 10, "retained count"
        )
    finally:
        late.close()
    assert report.not_json == 0 and report.invalid == 0
    assert report.by_type["snapshot"] == 1 and report.by_type["object"] >= 1
