"""The real clip shared/data/video/vtest.avi through the daemon, with a zone and a line, to a real
mosquitto: object events, occupancy, line counts and snapshots arrive, and every message follows its
schema (snapshots are JPEG)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from edgedet.publish.schema import MessageValidator
from tests.support.broker import Mosquitto
from tests.support.daemon_harness import DEVICE, RunningDaemon, Subscriber, daemon_config
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.timeout(240)]


def of_type(subscriber: Subscriber, kind: str) -> List[Dict[str, Any]]:
    out = []
    for _, topic, payload, _ in list(subscriber.messages):
        if topic.endswith("/snapshot") or topic.endswith("/status"):
            continue
        msg = json.loads(payload)
        if msg.get("type") == kind:
            out.append(msg)
    return out


@pytest.mark.slow
def test_vtest_clip_with_a_zone_and_a_line_publishes_valid_tracking_messages(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber, shared_dir: Path
) -> None:
    cv2: Any = pytest.importorskip("cv2")
    config = daemon_config(tmp_path, mosquitto, cameras=("plaza",))
    camera = config["cameras"][0]
    camera["source"]["path"] = str(shared_dir / "data" / "video" / "vtest.avi")
    camera["max_fps"] = 5
    config["tracking"] = {
        "cameras": {
            "plaza": {
                "zones": [{"name": "road", "points": [[0.55, 0.33], [1.0, 0.28], [1.0, 0.62], [0.55, 0.58]]}],
                # drawn bottom to top: walking to the right is "in"
                "lines": [{"name": "crossing", "points": [[0.45, 0.62], [0.45, 0.3]]}],
            }
        }
    }
    d = RunningDaemon(tmp_path, mosquitto, config)
    try:
        d.wait_ready()
        wait_for(lambda: any(m["last"] for m in of_type(subscriber, "line_count")), 90, "a line crossing")
        wait_for(
            lambda: any(m["total"] for m in of_type(subscriber, "occupancy")), 30, "a person in the zone"
        )
        wait_for(lambda: of_type(subscriber, "object"), 30, "an object event")
        subscriber.wait("plaza/person/snapshot", timeout=30)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) == 0, d.log_text()[-3000:]
    finally:
        d.stop()

    validator = MessageValidator()
    snapshots = 0
    for _, topic, payload, _ in list(subscriber.messages):
        if topic.endswith("/snapshot"):
            picture = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            assert picture is not None and picture.size, topic
            snapshots += 1
            continue
        message: Any = payload.decode() if topic.endswith("/status") else json.loads(payload)
        assert validator.errors(message) == [], (topic, message)
    assert snapshots >= 1
    objects = of_type(subscriber, "object")
    assert objects[0]["event"] == "new" and objects[0]["label"] == "person"
    tracked = {b["track_id"] for m in of_type(subscriber, "detections") for b in m["detections"]}
    assert {o["track_id"] for o in objects if o["event"] == "new"} <= tracked
    topics = {t for _, t, _, _ in subscriber.messages}
    assert (
        f"edgedet/{DEVICE}/plaza/zones/road" in topics and f"edgedet/{DEVICE}/plaza/lines/crossing" in topics
    )

    def persisted_as_published() -> bool:  # the last count may still be on its way to the subscriber
        counts = json.loads((tmp_path / "state" / "line_counts.json").read_text())
        last = [m for m in of_type(subscriber, "line_count") if m["last"]][-1]
        return bool(counts["lines"]["plaza"]["crossing"] == last["counts"])

    wait_for(persisted_as_published, 5, "line counts in state_dir equal to the last published ones")
