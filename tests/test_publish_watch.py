"""`edgedet watch --check`: the subscriber-side proof of gaps, duplicates and order."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any, Dict

from edgedet.devtools.watch import DUPLICATE, FIRST, GAP, LATE, OK, RESET, SeqChecker, format_message, watch
from edgedet.publish.mqtt import MqttPublisher
from edgedet.tracking.config import TrackingConfig
from edgedet.tracking.stage import Tracking
from tests.support.mqtt_helpers import MODEL, event, publisher_cfg, result, wait_for


def msg(seq: int, mid: str = "", epoch: str = "e1", camera: str = "cam1") -> Dict[str, Any]:
    return {
        "type": "event",
        "device_id": "d",
        "camera": camera,
        "seq": seq,
        "epoch": epoch,
        "id": mid or f"id{seq}",
    }


def test_seq_checker_classifies_every_case() -> None:
    c = SeqChecker()
    verdicts = [c.feed(msg(s)) for s in (5, 6, 9, 7, 6, 10)]
    assert verdicts == [FIRST, OK, GAP, LATE, DUPLICATE, OK]
    rep = c.report()["d/cam1/event"]
    assert (rep.received, rep.unique, rep.duplicates, rep.out_of_order, rep.gaps) == (6, 5, 1, 1, 1)
    assert rep.missing == {8}
    assert c.unique_seqs("d/cam1/event") == [5, 6, 9, 7, 10]
    # the same seq with another id: numbering reused
    assert c.feed(msg(6, mid="other")) == "conflict"
    # a new epoch (store lost) restarts the numbering without calling it a gap or duplicate
    assert c.feed(msg(1, epoch="e2")) == RESET
    assert c.feed(msg(2, epoch="e2")) == OK
    rep = c.report()["d/cam1/event"]
    assert rep.resets == 1 and rep.conflicts == 1 and rep.duplicates == 1
    # streams are per camera
    assert c.feed(msg(100, camera="cam2")) == FIRST


def test_format_lines() -> None:
    t = time.time()
    det = {
        "type": "detections",
        "device_id": "d",
        "camera": "c",
        "seq": 3,
        "frame_seq": 9,
        "count": 3,
        "detections": [{"class_name": "person"}, {"class_name": "person"}, {"class_name": "car"}],
        "latency_ms": {"capture_to_publish": 41.7},
        "publish_ts_ms": int(t * 1000),
    }
    line = format_message("edgedet/d/c/detections", det)
    assert "d/c detections seq=3 frame=9 n=3 person x2, car 42 ms" in line
    assert format_message("edgedet/d/status", "online").endswith("edgedet/d/status online")


def test_watch_against_a_live_publisher(mosquitto: Any, tmp_path: Path) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "state")
    pub.start()
    assert wait_for(lambda: pub.connected)
    out = io.StringIO()
    stop = threading.Event()
    box: Dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.setdefault(
            "r", watch("127.0.0.1", mosquitto.port, check=True, validate=True, stop=stop, out=out)
        ),
        name="test-watch",
    )
    t.start()
    try:
        assert wait_for(lambda: "subscribed to edgedet/#" in out.getvalue())
        # presence events are decided by the tracking stage (here without the tracker)
        tracking = Tracking(TrackingConfig(enabled=False), pub.cfg.events, tmp_path / "state")
        for i in range(4):
            pub.publish_tracking(tracking.process(result("cam1", i, ["person"])), MODEL)
        pub.publish_event(event("cam2", 1))
        assert wait_for(
            lambda: out.getvalue().count(" detections seq=") == 4 and "cam2 event" in out.getvalue()
        )
    finally:
        stop.set()
        t.join(10)
        pub.stop(2.0)
    rep = box["r"]
    text = out.getvalue()
    assert rep.invalid == 0 and rep.gaps == 0 and rep.duplicates == 0
    assert rep.by_type["detections"] == 4 and rep.status["dev1"] in ("online", "offline")
    assert "dev1/cam1/detections" in rep.streams and rep.streams["dev1/cam1/detections"].unique == 4
    # presence: 3 frames with a person -> appeared on cam1
    assert "dev1/cam1 event seq=1 appeared person" in text
    assert "total:" in text and "0 missing" in text


def test_watch_reports_the_gap_left_by_a_refused_message(mosquitto: Any, tmp_path: Path) -> None:
    out = io.StringIO()
    stop = threading.Event()
    box: Dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.setdefault(
            "r", watch("127.0.0.1", mosquitto.port, check=True, stop=stop, out=out)
        ),
        name="test-watch",
    )
    t.start()
    try:
        assert wait_for(lambda: "subscribed" in out.getvalue())
        cfg = publisher_cfg(mosquitto.port, max_payload_bytes=700)
        pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
        pub.start()
        assert wait_for(lambda: pub.connected)
        pub.publish_detections(result("cam1", 1, []), MODEL)
        pub.publish_detections(result("cam1", 2, ["person"] * 10), MODEL)  # refused: too big -> a real loss
        pub.publish_detections(result("cam1", 3, []), MODEL)
        assert wait_for(lambda: "<-- GAP" in out.getvalue())
        pub.stop(2.0)
    finally:
        stop.set()
        t.join(10)
    rep = box["r"]
    assert rep.streams["dev1/cam1/detections"].gaps == 1
    assert rep.problems() == []  # a QoS 0 drop is not a --check failure
    assert rep.problems(durable_types=("detections",)) == ["dev1/cam1/detections: 1 message(s) missing"]


def test_interleaved_epochs_are_tracked_apart_so_no_gap_hides() -> None:
    c = SeqChecker()
    # a device replays its older epoch's messages while the new epoch has started
    verdicts = [
        c.feed(msg(s, epoch=e, mid=f"{e}-{s}")) for e, s in (("e1", 1), ("e2", 1), ("e1", 3), ("e2", 2))
    ]
    assert verdicts == [FIRST, RESET, GAP, OK]
    tracks = c.report_epochs()
    assert tracks[("d/cam1/event", "e1")].missing == {2}  # e1's seq 2 never came
    assert tracks[("d/cam1/event", "e2")].gaps == 0
    rep = c.report()["d/cam1/event"]
    assert rep.gaps == 1 and rep.resets == 1 and rep.unique == 4
    # a duplicate of e1 after e2 started is still a duplicate of e1, not a new start
    assert c.feed(msg(3, epoch="e1", mid="e1-3")) == DUPLICATE
    assert c.feed(msg(3, epoch="e1", mid="another")) == "conflict"


def test_check_treats_every_durable_class_as_durable() -> None:
    from edgedet.devtools.watch import WatchReport, durable_message_types
    from edgedet.publish.config import MessagesConfig

    cfg = MessagesConfig.model_validate({"telemetry": {"topic": "telemetry", "qos": 1, "durable": True}})
    assert durable_message_types(cfg) == ["event", "object", "telemetry"]
    assert durable_message_types() == ["event", "object"]
    c = SeqChecker()
    for s in (1, 2, 4):
        c.feed({"type": "telemetry", "device_id": "d", "seq": s, "epoch": "e", "id": str(s)})
    rep = WatchReport(streams=c.report())
    assert rep.problems(durable_message_types(cfg)) == ["d/telemetry: 1 message(s) missing"]
    assert rep.problems() == []  # telemetry is not durable by default: a drop, not a loss


def test_device_strings_cannot_drive_the_terminal() -> None:
    evil = dict(msg(1), camera="cam\x1b]0;owned\x07\x1b[2J", class_name="person\r\x9b31m", event="appeared")
    line = format_message("edgedet/d/cam/events", evil)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in line), repr(line)
    assert "\\x1b]0;owned\\x07" in line
    out = io.StringIO()
    w = watch("127.0.0.1", 1, duration=0.0, out=out, check=True)
    assert w.messages == 0 and "\x1b" not in out.getvalue()


def test_zones_and_lines_are_streams_of_their_own() -> None:
    from edgedet.devtools.watch import WatchReport, durable_message_types
    from edgedet.publish.config import MessagesConfig

    c = SeqChecker()
    for zone in ("door", "yard"):  # each zone has its own numbering on the device
        for s in (1, 2):
            v = c.feed(
                {
                    "type": "occupancy",
                    "device_id": "d",
                    "camera": "c",
                    "zone": zone,
                    "seq": s,
                    "epoch": "e",
                    "id": f"{zone}{s}",
                }
            )
            assert v in (FIRST, OK)
    assert set(c.report()) == {"d/c/occupancy/door", "d/c/occupancy/yard"}
    cfg = MessagesConfig.model_validate(
        {"occupancy": {"topic": "{camera}/zones/{zone}", "qos": 1, "durable": True}}
    )
    assert "occupancy" in durable_message_types(cfg) and "object" in durable_message_types()
    c.feed(
        {
            "type": "occupancy",
            "device_id": "d",
            "camera": "c",
            "zone": "door",
            "seq": 4,
            "epoch": "e",
            "id": "x",
        }
    )
    rep = WatchReport(streams=c.report())
    assert rep.problems(durable_message_types(cfg)) == ["d/c/occupancy/door: 1 message(s) missing"]
