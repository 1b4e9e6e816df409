"""MqttPublisher against a real mosquitto: availability, last will, reconnects, limits, auth."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edgedet.errors import PublishError
from edgedet.publish.config import MqttConfig
from edgedet.publish.mqtt import MqttPublisher, resolve_password
from tests.support.broker import Mosquitto, free_port
from tests.support.mqtt_helpers import (
    MODEL,
    PublisherProc,
    publisher_cfg,
    result,
    subscriber,
    wait_for,
)


def test_online_retained_detections_valid_offline_on_stop(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "state")
    pub.start()
    assert wait_for(lambda: pub.connected)
    # a subscriber arriving later still learns the state: retained
    sub = subscriber(mosquitto.port, validate=True, check=True)
    try:
        assert wait_for(lambda: sub.report().status.get("dev1") == "online")
        for i in range(5):
            pub.publish_detections(result("cam1", i, ["person", "car"]), MODEL)
        stats = {"cameras": {"cam1": {"state": "running", "frames_in": 5, "frames_out": 5, "dropped": 0}}}
        pub.publish_stats(dict(stats, latency_ms={}, interval_s=10.0, uptime_s=1.0))
        pub.publish_telemetry({"temperature_c": {"cpu": 41.5}}, source="sysfs")
        assert wait_for(
            lambda: sub.report().by_type.get("stats") == 1 and sub.report().by_type.get("telemetry") == 1
        )
        assert wait_for(lambda: sub.report().by_type.get("detections") == 5)
        pub.stop(5.0)
        assert wait_for(lambda: sub.report().status.get("dev1") == "offline")
        rep = sub.report()
        assert rep.invalid == 0 and rep.not_json == 0
        assert sub.checker.unique_seqs("dev1/cam1/detections") == [1, 2, 3, 4, 5]
        det = next(msg for msg in sub.messages if isinstance(msg, dict) and msg["type"] == "detections")
        assert [d["class_name"] for d in det["detections"]] == ["person", "car"]
        st = pub.status()
        assert st.sent >= 9 and st.dropped == 0 and st.last_error is None
    finally:
        sub.stop()
    # retained offline for whoever comes next
    late = subscriber(mosquitto.port)
    try:
        assert wait_for(lambda: late.report().status.get("dev1") == "offline")
    finally:
        late.stop()


def test_last_will_offline_when_the_process_dies(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = subscriber(mosquitto.port)
    proc = PublisherProc(publisher_cfg(mosquitto.port, keepalive_s=5), tmp_path / "state")
    try:
        assert proc.cmd("wait connected 10") == "ok"
        assert wait_for(lambda: sub.report().status.get("dev1") == "online")
        proc.kill()  # SIGKILL: no DISCONNECT is sent, the broker publishes the will
        assert wait_for(lambda: sub.report().status.get("dev1") == "offline", timeout=10)
    finally:
        proc.close()
        sub.stop()


def test_reconnects_after_broker_restart_and_counts_qos0_drops(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "state")
    pub.start()
    try:
        assert wait_for(lambda: pub.connected)
        mosquitto.stop()
        assert wait_for(lambda: not pub.connected)
        t0 = time.monotonic()
        for i in range(10):
            assert pub.publish_detections(result("cam1", i), MODEL) is False
        assert time.monotonic() - t0 < 1.0  # returned at once, nothing waited for the broker
        st = pub.status()
        assert st.dropped == 10 and st.connected is False and "connection lost" in (st.last_error or "")
        mosquitto.start()
        assert wait_for(lambda: pub.connected, timeout=10)
        sub = subscriber(mosquitto.port)
        try:
            assert wait_for(lambda: sub.report().status.get("dev1") == "online")
            pub.publish_detections(result("cam1", 11), MODEL)
            # seq goes on after the drops: the subscriber can see that 10 frames were lost
            assert wait_for(lambda: sub.checker.unique_seqs("dev1/cam1/detections") == [11])
        finally:
            sub.stop()
        assert pub.status().connects == 2
    finally:
        pub.stop(2.0)


def test_broker_down_at_start_is_reported_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    pub = MqttPublisher(publisher_cfg(port), "dev1", tmp_path / "state")
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.mqtt"):
        pub.start()
        assert wait_for(lambda: pub.status().connect_failures >= 2, timeout=10)
    try:
        st = pub.status()
        assert (
            not st.connected and "unreachable" in (st.last_error or "") and "refused" in (st.last_error or "")
        )
        assert "cannot connect to 127.0.0.1" in caplog.text
        # rate-limited: several failures, one line (plus at most one repeat)
        assert caplog.text.count("cannot connect to 127.0.0.1") <= 2
        assert pub.publish_event(
            __import__("tests.support.mqtt_helpers").support.mqtt_helpers.event("cam1", 1)
        )
    finally:
        pub.stop(1.0)


def test_oversize_payload_refused_counted_and_logged(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port, max_payload_bytes=1024), "dev1", tmp_path / "state")
    pub.start()
    sub = subscriber(mosquitto.port)
    try:
        assert wait_for(lambda: pub.connected)
        with caplog.at_level(logging.WARNING, logger="edgedet.publish.mqtt"):
            assert pub.publish_detections(result("cam1", 1, ["person"] * 30), MODEL) is False
        assert "exceeds max_payload_bytes=1024" in caplog.text
        assert pub.publish_detections(result("cam1", 2, ["person"]), MODEL) is True
        st = pub.status()
        assert st.oversize == 1 and st.dropped == 1
        # the refused message used seq 1: the subscriber sees the gap, i.e. the loss is visible
        assert wait_for(lambda: sub.checker.unique_seqs("dev1/cam1/detections") == [2])
    finally:
        sub.stop()
        pub.stop(2.0)


def test_mqtt_311_works(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pub = MqttPublisher(publisher_cfg(mosquitto.port, protocol="3.1.1"), "dev1", tmp_path / "state")
    pub.start()
    sub = subscriber(mosquitto.port, protocol="3.1.1")
    try:
        assert wait_for(lambda: pub.connected)
        pub.publish_detections(result("cam1", 1), MODEL)
        assert wait_for(lambda: sub.report().by_type.get("detections") == 1)
    finally:
        sub.stop()
        pub.stop(2.0)


def test_resolve_password_env_then_credentials_dir(tmp_path: Path) -> None:
    cfg = MqttConfig(username="u", password_env="MY_PW", password_credential="mqtt-pw")
    assert resolve_password(cfg, {}) is None
    (tmp_path / "mqtt-pw").write_text("s3cret\n")
    assert resolve_password(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "s3cret"
    assert resolve_password(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path), "MY_PW": "fromenv"}) == "fromenv"
    assert resolve_password(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) is None
    (tmp_path / "mqtt-pw").write_text("\n")  # install-service leaves an empty one: no password
    assert resolve_password(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None


def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    cfg = publisher_cfg(8883, tls={"ca_file": str(tmp_path / "missing-ca.pem")})
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
    with pytest.raises(PublishError, match=r"TLS setup failed.*missing-ca\.pem"):
        pub.start()
