"""The durable outbox against a real mosquitto: outages, SIGKILL, bounds, shared subscriptions,
and a store that is corrupt, unwritable or full."""

from __future__ import annotations

import contextlib
import logging
import resource
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

from edgedet.publish.mqtt import MqttPublisher
from edgedet.publish.outbox import Outbox
from tests.support.broker import free_port
from tests.support.mqtt_helpers import (
    PublisherProc,
    event,
    persistent_broker,
    publisher_cfg,
    subscriber,
    wait_for,
)

STREAM = "dev1/cam1/event"


def _persistent_sub(port: int, name: str, **kw: Any) -> Any:
    # a persistent session: the broker keeps the subscription and queues messages while it is away
    return subscriber(port, client_id=name, session_expiry_s=300, topic="+/+/events", **kw)


@pytest.mark.slow
def test_broker_outage_every_durable_message_once_in_order(mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = persistent_broker(mosquitto_factory)
    sub = _persistent_sub(broker.port, "outage-sub", check=True)
    pub = MqttPublisher(publisher_cfg(broker.port), "dev1", tmp_path / "state")
    pub.start()
    assert wait_for(lambda: pub.connected)
    stop = threading.Event()
    sent: List[bool] = []

    def produce() -> None:  # "the daemon publishes durable events continuously"
        i = 0
        while not stop.is_set():
            i += 1
            sent.append(pub.publish_event(event("cam1", i)))
            time.sleep(0.005)

    producer = threading.Thread(target=produce, name="test-producer")
    producer.start()
    try:
        assert wait_for(lambda: len(sent) > 100)
        broker.stop()
        assert wait_for(lambda: not pub.connected)
        time.sleep(2.0)  # longer than reconnect_max_s=1: several failed reconnects
        assert pub.status().connect_failures >= 1
        assert pub.status().outbox_depth > 0
        broker.start()
        assert wait_for(lambda: pub.connected, timeout=10)
        time.sleep(0.5)
        stop.set()
        producer.join()
        n = len(sent)
        assert all(sent)
        assert wait_for(lambda: pub.status().outbox_depth == 0, timeout=15)
        assert wait_for(lambda: sub.report().streams.get(STREAM) is not None, timeout=10)
        assert wait_for(lambda: sub.report().streams[STREAM].unique == n, timeout=15), sub.report().streams[
            STREAM
        ]
        rep = sub.report().streams[STREAM]
        assert sub.checker.unique_seqs(STREAM) == list(range(1, n + 1))  # in order, no gap
        assert rep.gaps == 0 and rep.out_of_order == 0 and rep.conflicts == 0
        st = pub.status()
        assert st.outbox_dropped == 0 and st.connects == 2
    finally:
        stop.set()
        producer.join()
        pub.stop(2.0)
        sub.stop()


@pytest.mark.slow
def test_sigkill_with_broker_down_pending_messages_delivered_after_restart(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    broker = persistent_broker(mosquitto_factory)
    sub = _persistent_sub(broker.port, "kill-sub")
    cfg = publisher_cfg(broker.port)
    state = tmp_path / "state"
    first = PublisherProc(cfg, state)
    second = None
    try:
        assert first.cmd("wait connected 10") == "ok"
        assert first.cmd("events 20") == "20"
        assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 20)
        broker.stop()
        assert first.cmd("wait disconnected 10") == "ok"
        assert first.cmd("events 30") == "50"
        assert first.cmd("wait committed 5") == "ok"
        assert first.status()["outbox_depth"] == 30
        first.kill()  # SIGKILL: nothing flushed, nothing said
        broker.start()
        second = PublisherProc(cfg, state)
        assert second.cmd("wait flushed 15") == "ok"
        assert second.cmd("events 1") == "51"  # numbering goes on across the crash
        assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 51, timeout=15), (
            sub.checker.unique_seqs(STREAM)
        )
        assert sub.checker.unique_seqs(STREAM) == list(range(1, 52))
        assert sub.report().streams[STREAM].gaps == 0
        assert second.cmd("stop 5") == "stopped"
    finally:
        first.close()
        if second is not None:
            second.close()
        sub.stop()


def test_full_outbox_drops_oldest_counted_and_reported(mosquitto_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    cfg = publisher_cfg(port, outbox={"max_messages": 50})
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
    pub.start()
    try:
        for i in range(200):
            assert pub.publish_event(event("cam1", i)) is True
        assert wait_for(lambda: pub.status().outbox.pending == 0)  # type: ignore[union-attr]
        st = pub.status()
        assert st.outbox_depth == 50 and st.outbox_dropped == 150
        assert st.outbox is not None and st.outbox.dropped_oldest == 150
        broker = mosquitto_factory(port=port).start()
        sub = subscriber(broker.port)
        try:
            assert wait_for(lambda: pub.connected, timeout=10)
            assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 50, timeout=10)
            # the newest 50 survive, in order
            assert sub.checker.unique_seqs(STREAM) == list(range(151, 201))
            pub.publish_stats({"cameras": {}, "latency_ms": {}})
            assert wait_for(
                lambda: any(m.get("type") == "stats" for m in sub.messages if isinstance(m, dict))
            )
            stats = next(m for m in sub.messages if isinstance(m, dict) and m.get("type") == "stats")
            assert stats["mqtt"]["outbox_dropped"] == 150
        finally:
            sub.stop()
    finally:
        pub.stop(2.0)


def test_full_outbox_drop_new_refuses_and_counts(tmp_path: Path) -> None:
    cfg = publisher_cfg(free_port(), outbox={"max_messages": 20, "when_full": "drop_new"})
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
    pub.start()
    try:
        accepted = [pub.publish_event(event("cam1", i)) for i in range(50)]
        assert wait_for(lambda: pub.status().outbox.pending == 0)  # type: ignore[union-attr]
        st = pub.status()
        assert sum(accepted) == 20 and st.outbox_depth == 20 and st.outbox_dropped == 30
    finally:
        pub.stop(1.0)


def test_memory_stays_bounded_while_the_broker_is_away(tmp_path: Path) -> None:
    # 5,000 durable messages of ~10 KB (50 MB) into an outbox capped at 2 MB with the broker down
    cfg = publisher_cfg(
        free_port(),
        messages={"telemetry": {"topic": "telemetry", "qos": 1, "durable": True}},
        outbox={"max_bytes": 2 * 1024 * 1024},
    )
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
    pub.start()
    try:
        blob = {"rails": {f"rail{i}": "x" * 90 for i in range(100)}}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(5000):
            pub.publish_telemetry(blob, "sysfs")
        assert wait_for(lambda: pub.status().outbox.pending == 0, timeout=30)  # type: ignore[union-attr]
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        st = pub.status()
        assert st.outbox is not None and st.outbox.bytes <= 2 * 1024 * 1024
        assert st.outbox_depth + st.outbox_dropped == 5000
        assert grown_mb < 30, f"peak RSS grew by {grown_mb:.0f} MB"
    finally:
        pub.stop(1.0)


def test_shared_subscription_splits_the_stream(mosquitto: Any, tmp_path: Path) -> None:
    a = subscriber(mosquitto.port, share_group="g", topic="+/+/events")
    b = subscriber(mosquitto.port, share_group="g", topic="+/+/events")
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "state")
    pub.start()
    try:
        assert wait_for(lambda: pub.connected)
        for i in range(200):
            pub.publish_event(event("cam1", i))
        both = lambda: len(a.checker.unique_seqs(STREAM)) + len(b.checker.unique_seqs(STREAM))  # noqa: E731
        assert wait_for(lambda: both() >= 200, timeout=10)
        time.sleep(0.3)
        sa, sb = set(a.checker.unique_seqs(STREAM)), set(b.checker.unique_seqs(STREAM))
        assert sa | sb == set(range(1, 201))  # nothing lost
        assert not sa & sb  # nothing delivered to both
        assert sa and sb  # both did work
        assert a.report().duplicates == 0 and b.report().duplicates == 0
    finally:
        pub.stop(2.0)
        a.stop()
        b.stop()


def test_corrupt_store_is_moved_aside_and_recreated(
    mosquitto: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite").write_bytes(b"this is not an SQLite file " * 200)
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", state)
    sub = subscriber(mosquitto.port)
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.outbox"):
        pub.start()
    try:
        assert "is corrupt" in caplog.text and "moved aside" in caplog.text
        aside = list(state.glob("outbox.sqlite.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
        assert pub.status().outbox_mode == "sqlite"
        assert wait_for(lambda: pub.connected)
        for i in range(5):
            pub.publish_event(event("cam1", i))
        assert wait_for(lambda: sub.checker.unique_seqs(STREAM) == [1, 2, 3, 4, 5])
    finally:
        pub.stop(2.0)
        sub.stop()


def test_unwritable_state_dir_falls_back_to_memory_loudly(
    mosquitto: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state folder should be")
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", blocker / "state")
    sub = subscriber(mosquitto.port)
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.outbox"):
        pub.start()
    try:
        assert "cannot be used" in caplog.text and "kept in memory only" in caplog.text
        assert wait_for(lambda: pub.connected)
        for i in range(10):
            assert pub.publish_event(event("cam1", i))
        assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 10)
        assert wait_for(lambda: pub.status().outbox_depth == 0)
        st = pub.status()
        assert st.outbox_mode == "memory" and st.outbox_not_persisted == 10
    finally:
        pub.stop(2.0)
        sub.stop()


def _all_delivered_per_epoch(sub: Any, n: int) -> int:
    """Every one of the ``n`` messages arrived once, gap-free within each epoch; returns the epochs."""
    tracks = {e: t for (k, e), t in sub.checker.report_epochs().items() if k == STREAM}
    assert sum(t.unique for t in tracks.values()) == n, tracks
    assert all(t.gaps == 0 and t.conflicts == 0 for t in tracks.values()), tracks
    return len(tracks)


def _fill_until_full(pub: MqttPublisher, n: int) -> None:
    for i in range(n):
        assert pub.publish_event(event("cam1", i))
        if i % 10 == 9:
            with contextlib.suppress(AssertionError):  # a pause to let it drain, not a check
                wait_for(lambda: pub.status().outbox.pending == 0, timeout=5)  # type: ignore[union-attr]


def test_disk_full_sqlite_page_limit_keeps_everything_in_memory_then_delivers(
    mosquitto_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    cfg = publisher_cfg(port)
    outbox = Outbox(cfg.outbox, tmp_path / "state" / "outbox.sqlite", max_page_count=12, retry_store_s=0.5)
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state", outbox=outbox)
    with caplog.at_level(logging.ERROR, logger="edgedet.publish.outbox"):
        pub.start()
        _fill_until_full(pub, 120)
        assert wait_for(lambda: pub.status().outbox.pending == 0)  # type: ignore[union-attr]
    try:
        assert "cannot write" in caplog.text and "full" in caplog.text
        st = pub.status()
        assert st.outbox is not None and st.outbox.store_errors >= 1
        assert st.outbox_not_persisted > 0 and st.outbox_depth == 120 and st.outbox_dropped == 0
        broker = mosquitto_factory(port=port).start()
        sub = subscriber(broker.port)
        try:
            assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 120, timeout=15)
            # the first failed commit started a new epoch: numbering 1.. again, no seq reused
            assert _all_delivered_per_epoch(sub, 120) == 2 == pub.status().outbox.epochs + 1  # type: ignore[union-attr]
            assert wait_for(lambda: pub.status().outbox_depth == 0)
        finally:
            sub.stop()
    finally:
        pub.stop(2.0)


def _mount_tmpfs(where: Path, size: str) -> bool:
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return r.returncode == 0


def test_disk_full_on_a_tiny_tmpfs(
    mosquitto_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess

    tiny = tmp_path / "tiny"
    if not _mount_tmpfs(tiny, "96k"):
        pytest.skip(
            "cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the page-limit test covers disk full"
        )
    try:
        port = free_port()
        cfg = publisher_cfg(port)
        pub = MqttPublisher(
            cfg, "dev1", tiny, outbox=Outbox(cfg.outbox, tiny / "outbox.sqlite", retry_store_s=0.5)
        )
        with caplog.at_level(logging.ERROR, logger="edgedet.publish.outbox"):
            pub.start()
            _fill_until_full(pub, 300)
            assert wait_for(lambda: pub.status().outbox.pending == 0)  # type: ignore[union-attr]
        try:
            st = pub.status()
            assert st.outbox is not None and st.outbox.store_errors >= 1, caplog.text
            assert st.outbox_not_persisted > 0 and st.outbox_depth == 300
            broker = mosquitto_factory(port=port).start()
            sub = subscriber(broker.port)
            try:
                assert wait_for(lambda: len(sub.checker.unique_seqs(STREAM)) == 300, timeout=20)
                assert _all_delivered_per_epoch(sub, 300) >= 2
            finally:
                sub.stop()
        finally:
            pub.stop(2.0)
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)


def test_sequence_numbers_continue_across_restarts(mosquitto: Any, tmp_path: Path) -> None:
    from tests.support.mqtt_helpers import MODEL, result

    state = tmp_path / "state"
    sub = subscriber(mosquitto.port)
    try:
        for run in range(2):
            pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", state)
            pub.start()
            assert wait_for(lambda p=pub: p.connected)  # type: ignore[misc]
            for i in range(3):
                pub.publish_detections(result("cam1", i, []), MODEL)  # no presence events of its own
                pub.publish_event(event("cam1", i))
            assert wait_for(lambda p=pub: p.status().outbox_depth == 0)  # type: ignore[misc]
            pub.stop(2.0)
            if run == 0:
                epoch = pub.outbox.epoch
            else:
                assert pub.outbox.epoch == epoch
        assert wait_for(lambda: len(sub.checker.unique_seqs("dev1/cam1/detections")) == 6)
        assert sub.checker.unique_seqs("dev1/cam1/detections") == [1, 2, 3, 4, 5, 6]
        assert wait_for(lambda: sub.checker.unique_seqs(STREAM) == [1, 2, 3, 4, 5, 6]), (
            sub.checker.unique_seqs(STREAM)
        )
    finally:
        sub.stop()


def test_broker_refusal_is_counted_and_does_not_block_the_outbox(
    mosquitto_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite edgedet/dev1/status\ntopic readwrite edgedet/dev1/cam1/#\ntopic read edgedet/#\n"
    )
    broker = mosquitto_factory(extra=[f"acl_file {acl}"]).start()
    sub = subscriber(broker.port)
    pub = MqttPublisher(publisher_cfg(broker.port), "dev1", tmp_path / "state")
    pub.start()
    try:
        assert wait_for(lambda: pub.connected)
        with caplog.at_level(logging.WARNING, logger="edgedet.publish.outbox"):
            for i in range(3):
                pub.publish_event(event("cam2", i))  # not allowed: MQTT 5 PUBACK "Not authorized"
                pub.publish_event(event("cam1", i))
            assert wait_for(lambda: pub.status().outbox_depth == 0)
        st = pub.status()
        assert st.outbox is not None and st.outbox.rejected == 3 and st.outbox.acked == 3
        assert "broker refused a durable message" in caplog.text
        assert wait_for(lambda: sub.checker.unique_seqs(STREAM) == [1, 2, 3])
        assert sub.checker.unique_seqs("dev1/cam2/event") == []
    finally:
        pub.stop(2.0)
        sub.stop()


def test_messages_older_than_max_age_expire_counted(tmp_path: Path) -> None:
    cfg = publisher_cfg(free_port(), outbox={"max_age_s": 0.3})
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state")
    pub.start()
    try:
        for i in range(5):
            pub.publish_event(event("cam1", i))
        assert wait_for(lambda: pub.status().outbox_dropped == 5, timeout=5)
        st = pub.status()
        assert st.outbox is not None and st.outbox.expired == 5 and st.outbox_depth == 0
    finally:
        pub.stop(1.0)


def test_store_that_becomes_writable_takes_over_the_memory_queue(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    cfg = publisher_cfg(port)
    blocker = tmp_path / "state"
    blocker.write_text("not a folder yet")
    outbox = Outbox(cfg.outbox, blocker / "outbox.sqlite", retry_store_s=0.3)
    pub = MqttPublisher(cfg, "dev1", blocker, outbox=outbox)
    pub.start()
    try:
        for i in range(5):
            pub.publish_event(event("cam1", i))
        assert wait_for(lambda: pub.status().outbox.pending == 0)  # type: ignore[union-attr]
        assert pub.status().outbox_mode == "memory" and pub.status().outbox_not_persisted == 5
        blocker.unlink()
        blocker.mkdir()
        assert wait_for(lambda: pub.status().outbox_mode == "sqlite", timeout=5)
        pub.publish_event(event("cam1", 6))
        assert wait_for(lambda: (blocker / "outbox.sqlite").exists() and pub.status().outbox.pending == 0)  # type: ignore[union-attr]
        import sqlite3

        with sqlite3.connect(str(blocker / "outbox.sqlite")) as db:
            assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 6, timeout=5)
        broker = mosquitto_factory(port=port).start()
        sub = subscriber(broker.port)
        try:
            assert wait_for(lambda: sub.checker.unique_seqs(STREAM) == [1, 2, 3, 4, 5, 6], timeout=10)
        finally:
            sub.stop()
    finally:
        pub.stop(2.0)


def test_rows_handed_over_just_as_the_link_drops_are_delivered(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    # the race between "connected" and publish(): paho answers NO_CONN but keeps the QoS 1 message
    port = free_port()
    pub = MqttPublisher(publisher_cfg(port), "dev1", tmp_path / "state")
    pub.start()
    try:
        pub.outbox.set_connected(True)  # the outbox believes the link is up; paho knows it is not
        for i in range(5):
            pub.publish_event(event("cam1", i))
        assert wait_for(lambda: pub.status().outbox.inflight == 5)  # type: ignore[union-attr]
        broker = mosquitto_factory(port=port).start()
        sub = subscriber(broker.port)
        try:
            assert wait_for(lambda: pub.status().outbox_depth == 0, timeout=10)
            assert pub.outbox.failure is None
            pub.publish_event(event("cam1", 6))
            assert wait_for(lambda: sub.checker.unique_seqs(STREAM)[-1:] == [6], timeout=10)
        finally:
            sub.stop()
    finally:
        pub.stop(2.0)
