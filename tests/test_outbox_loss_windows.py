"""The outbox's loss windows, each closed: put() returns after the commit, numbering is never reused
(disk full, corruption at run time), migrated rows are deleted after PUBACK, memory ids never clash
with the file's, degraded mode is reported as such, a dead writer refuses, and the broker's Maximum
Packet Size is honoured. Real mosquitto, real SQLite files."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

from edgedet.publish.config import OutboxConfig
from edgedet.publish.mqtt import MqttPublisher
from edgedet.publish.outbox import Outbox
from tests.support.broker import free_port
from tests.support.mqtt_helpers import PublisherProc, event, persistent_broker, publisher_cfg, subscriber
from tests.support.waiting import wait_for

STREAM = "dev1/cam1/event"


def _rows_in(path: Path) -> int:
    with sqlite3.connect(str(path), timeout=10) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def _tracks(sub: Any, stream: str = STREAM) -> dict:
    return {e: t for (k, e), t in sub.checker.report_epochs().items() if k == stream}


def test_put_returns_only_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(OutboxConfig(commit_timeout_s=20.0), path)
    box.open()
    box.start(lambda *a: None)
    try:
        assert box.put("t/a", b"first", 1, False)
        assert _rows_in(path) == 1  # committed before put() returned, not "soon"
        # another writer holds the file (a slow disk, a busy timeout): put() must wait for it
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        result: List[bool] = []
        caller = threading.Thread(target=lambda: result.append(box.put("t/a", b"second", 1, False)))
        caller.start()
        time.sleep(0.5)
        assert result == []  # still waiting: nothing said "accepted" before the commit
        other.execute("COMMIT")
        caller.join(10)
        assert result == [True] and _rows_in(path) == 2
        other.close()
    finally:
        box.close()


def test_put_that_cannot_commit_in_time_returns_false_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(OutboxConfig(commit_timeout_s=0.3), path)
    box.open()
    box.start(lambda *a: None)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert box.put("t/a", b"late", 1, False) is False
        assert box.stats().commit_timeouts == 1
        other.execute("COMMIT")
        # not lost either: it is committed once the file is free (and would be delivered)
        wait_for(lambda: _rows_in(path) == 1, 10, "the late row to be committed")
    finally:
        other.close()
        box.close()


def test_concurrent_callers_share_one_group_commit(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(OutboxConfig(commit_timeout_s=20.0), path)
    box.open()
    box.start(lambda *a: None)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        wait_for(lambda: box.stats().commits >= 1, 5, "the first commit (sequence numbers)")
        before = box.stats().commits
        other.execute("BEGIN IMMEDIATE")  # callers pile up behind one busy commit
        done: List[bool] = []
        callers = [
            threading.Thread(target=lambda i=i: done.append(box.put("t/a", b"m%d" % i, 1, False)))
            for i in range(8)
        ]
        for c in callers:
            c.start()
        time.sleep(0.3)
        other.execute("COMMIT")
        for c in callers:
            c.join(10)
        assert done == [True] * 8 and _rows_in(path) == 8
        # eight callers, far fewer fsyncs: the ones that queued behind the busy file shared one commit
        assert box.stats().commits - before <= 2
    finally:
        other.close()
        box.close()


@pytest.mark.slow
def test_disk_full_then_crash_never_reuses_a_seq_under_the_same_epoch(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    broker = persistent_broker(mosquitto_factory)
    sub = subscriber(broker.port, check=True, client_id="full-sub", session_expiry_s=300, topic="+/+/events")
    cfg = publisher_cfg(broker.port)
    state = tmp_path / "state"
    first = PublisherProc(cfg, state, env={"EDGEDET_TEST_MAX_PAGES": "12"})
    second = None
    try:
        assert first.cmd("wait connected 10") == "ok"
        broker.stop()
        assert first.cmd("wait disconnected 10") == "ok"
        assert first.cmd("events 120") != ""  # the 12-page file fills: the rest stays in memory
        assert first.cmd("wait committed 10") == "ok"
        st = first.status()
        assert st["outbox"]["store_errors"] >= 1 and st["outbox_not_persisted"] > 0
        broker.start()
        assert first.cmd("wait flushed 20") == "ok"  # all 120 delivered, some only from memory
        first.kill()  # SIGKILL while the store still lags behind what was sent
        second = PublisherProc(cfg, state)
        assert second.cmd("wait connected 10") == "ok"
        assert second.cmd("events 5") != ""
        assert second.cmd("wait flushed 15") == "ok"
        wait_for(lambda: sum(t.unique for t in _tracks(sub).values()) == 125, 15, "all 125 events")
        tracks = _tracks(sub)
        assert all(t.conflicts == 0 for t in tracks.values()), tracks  # no seq reused with another id
        assert all(t.gaps == 0 for t in tracks.values()), tracks
        assert len(tracks) >= 2  # the failed commit started a new epoch
    finally:
        first.close()
        if second is not None:
            second.close()
        sub.stop()


def _corrupt_under(path: Path) -> None:
    """Overwrite the file's pages the way a failing disk would, then make the open connection
    notice (another connection changes the file, so its page cache is invalidated)."""
    with sqlite3.connect(str(path), isolation_level=None, timeout=10) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA user_version=7")
    db.close()


def test_corrupt_store_at_run_time_starts_a_new_epoch_and_forgets_persisted_seqs(
    mosquitto: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    sub = subscriber(mosquitto.port, check=True)
    cfg = publisher_cfg(mosquitto.port)
    try:
        pub = MqttPublisher(cfg, "dev1", state)
        pub.start()
        wait_for(lambda: pub.connected, 10, "connected")
        for i in range(5):
            assert pub.publish_event(event("cam1", i))  # cam1: seqs 1..5 persisted in the file
        for i in range(40):
            assert pub.publish_event(event("cam3", i))  # fills a few pages to corrupt
        wait_for(lambda: pub.status().outbox_depth == 0, 10, "acks")
        before = pub.outbox.epoch
        _corrupt_under(state / "outbox.sqlite")
        with caplog.at_level(logging.WARNING, logger="edgedet.publish.outbox"):
            assert pub.publish_event(event("cam2", 0))  # the commit that finds the corruption
            wait_for(lambda: list(state.glob("outbox.sqlite.corrupt-*")), 10, "the file moved aside")
            assert pub.publish_event(event("cam2", 1))
        assert "corrupt" in caplog.text and pub.outbox.epoch != before
        wait_for(lambda: pub.status().outbox_depth == 0, 10, "acks")
        pub.stop(2.0)
        again = MqttPublisher(cfg, "dev1", state)
        again.start()
        wait_for(lambda: again.connected, 10, "connected again")
        assert again.outbox.epoch == pub.outbox.epoch  # the new file carries the new epoch
        assert again.publish_event(event("cam1", 9))  # cam1 restarts at 1, but under the new epoch
        wait_for(lambda: again.status().outbox_depth == 0, 10, "acks")
        again.stop(2.0)
        wait_for(lambda: len(sub.checker.unique_seqs("dev1/cam1/event")) == 6, 10, "cam1's 6 events")
        rep = sub.report()
        assert rep.conflicts == 0, {k: (s.conflicts, s.epoch) for k, s in rep.streams.items()}
        assert rep.streams["dev1/cam1/event"].resets == 1
    finally:
        sub.stop()


@pytest.mark.slow
def test_rows_migrated_from_memory_while_in_flight_are_deleted_after_puback(
    mosquitto: Any, tmp_path: Path
) -> None:
    cfg = publisher_cfg(mosquitto.port, keepalive_s=30)
    blocker = tmp_path / "state"
    blocker.write_text("not a folder yet")  # the store cannot be opened: memory mode
    outbox = Outbox(cfg.outbox, blocker / "outbox.sqlite", retry_store_s=0.3)
    pub = MqttPublisher(cfg, "dev1", blocker, outbox=outbox)
    sub = subscriber(mosquitto.port, check=True)
    pub.start()
    try:
        wait_for(lambda: pub.connected, 10, "connected")
        assert mosquitto.proc is not None
        mosquitto.proc.send_signal(signal.SIGSTOP)  # the broker takes the messages but does not ack
        try:
            for i in range(5):
                assert pub.publish_event(event("cam1", i))
            wait_for(lambda: pub.status().outbox.inflight == 5, 10, "5 in flight from memory")  # type: ignore[union-attr]
            blocker.unlink()
            blocker.mkdir()  # the store works again: the 5 rows move into the file while in flight
            wait_for(lambda: pub.status().outbox_mode == "sqlite", 10, "the store taking over")
            assert _rows_in(blocker / "outbox.sqlite") == 5
        finally:
            mosquitto.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: pub.status().outbox_depth == 0, 10, "PUBACKs to empty the outbox")
        assert pub.outbox.flush(2.0)
        wait_for(lambda: _rows_in(blocker / "outbox.sqlite") == 0, 10, "the acked rows deleted")
    finally:
        pub.stop(2.0)
    # nothing is sent again at the next start
    again = MqttPublisher(cfg, "dev1", blocker)
    again.start()
    try:
        wait_for(lambda: again.connected, 10, "connected again")
        time.sleep(0.5)
        assert again.status().outbox_depth == 0 and sub.report().duplicates == 0
    finally:
        again.stop(2.0)
        sub.stop()


def test_memory_ids_never_clash_with_unacknowledged_rows_of_a_store_that_failed_at_boot(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    cfg = publisher_cfg(port)
    state = tmp_path / "state"
    old = MqttPublisher(cfg, "dev1", state)
    old.start()
    for i in range(10):
        assert old.publish_event(event("cam1", i))  # broker down: rows 1..10 stay in the file
    old.stop(0.5)
    assert _rows_in(state / "outbox.sqlite") == 10
    away = tmp_path / "state.away"
    state.rename(away)
    state.write_text("the folder is gone at boot")
    outbox = Outbox(cfg.outbox, state / "outbox.sqlite", retry_store_s=0.3)
    pub = MqttPublisher(cfg, "dev1", state, outbox=outbox)
    pub.start()
    try:
        for i in range(5):
            assert pub.publish_event(event("cam2", i))  # memory rows, ids from 1
        assert pub.status().outbox_mode == "memory"
        state.unlink()
        away.rename(state)  # the store is back, with its own rows 1..10
        wait_for(lambda: pub.status().outbox_mode == "sqlite", 10, "the store taking over")
        assert pub.status().outbox_depth == 15
        broker = mosquitto_factory(port=port).start()
        sub = subscriber(broker.port, check=True)
        try:
            wait_for(lambda: pub.status().outbox_depth == 0, 15, "all 15 acknowledged")
            wait_for(lambda: sub.report().messages >= 15, 10, "15 messages")
            cam1, cam2 = sub.checker.unique_seqs(STREAM), sub.checker.unique_seqs("dev1/cam2/event")
            assert sorted(cam1) == list(range(1, 11)) and sorted(cam2) == [1, 2, 3, 4, 5]
        finally:
            sub.stop()
    finally:
        pub.stop(2.0)


def test_degraded_mode_is_reported_as_such_and_stop_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = publisher_cfg(free_port())
    outbox = Outbox(cfg.outbox, tmp_path / "state" / "outbox.sqlite", max_page_count=12)
    pub = MqttPublisher(cfg, "dev1", tmp_path / "state", outbox=outbox)
    pub.start()
    for i in range(150):
        assert pub.publish_event(event("cam1", i))
    st = pub.status()
    assert st.outbox is not None and st.outbox.memory > 0
    assert st.outbox_mode == "degraded" and st.outbox_memory == st.outbox.memory
    assert pub.status_payload()["outbox_mode"] == "degraded"
    with caplog.at_level(logging.WARNING, logger="edgedet.publish.mqtt"):
        pub.stop(0.5)
    assert f"{st.outbox.memory} durable message(s)" in caplog.text and "LOST" in caplog.text
    assert f"{st.outbox_depth - st.outbox.memory} durable message(s) not acknowledged: kept in" in caplog.text


def test_put_fails_once_the_writer_thread_is_dead(tmp_path: Path) -> None:
    box = Outbox(OutboxConfig(), tmp_path / "outbox.sqlite")
    box.open()

    def send(*args: Any) -> Any:
        raise SystemExit("a send function that ends the thread")

    box.start(send)
    box.set_connected(True)
    assert box.put("t/a", b"m", 1, False)  # committed; sending it kills the writer
    assert box._thread is not None
    box._thread.join(5)
    assert box.failure is not None
    assert box.put("t/a", b"n", 1, False) is False
    assert box.stats().dropped_new == 1
    box.close()


def test_oversized_durable_message_is_rejected_once_not_looping(
    mosquitto_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_factory(extra=["max_packet_size 2000"]).start()
    sub = subscriber(broker.port, check=True)
    pub = MqttPublisher(publisher_cfg(broker.port), "dev1", tmp_path / "state")
    pub.start()
    try:
        wait_for(lambda: pub.connected, 10, "connected")
        big = dataclasses.replace(event("cam1", 1), class_name="x" * 3000)
        with caplog.at_level(logging.WARNING):
            assert pub.publish_event(big)  # stored: the limit is checked when it is sent
            assert pub.publish_event(event("cam1", 2))
            wait_for(lambda: pub.status().outbox_depth == 0, 10, "the outbox to empty")
        wait_for(lambda: sub.checker.unique_seqs(STREAM) == [2], 10, "the small message")
        st = pub.status()
        assert st.outbox_rejected == 1 and st.connects == 1  # refused once, no reconnect loop
        assert "Maximum Packet Size of 2000 bytes" in caplog.text
        pub.publish_stats({"cameras": {}, "latency_ms": {}})
        wait_for(lambda: sub.report().by_type.get("stats") == 1, 10, "the stats message")
        stats = next(m for m in sub.messages if isinstance(m, dict) and m.get("type") == "stats")
        assert stats["mqtt"]["outbox_rejected"] == 1  # the refusal reaches the stats message
    finally:
        pub.stop(2.0)
        sub.stop()


def test_password_without_tls_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = publisher_cfg(free_port(), username="edge")
    with caplog.at_level(logging.WARNING, logger="edgedet.publish.mqtt"):
        pub = MqttPublisher(cfg, "dev1", tmp_path / "state", password="secret")
        pub.start()
        pub.stop(0.2)
    assert "clear text" in caplog.text and "secret" not in caplog.text


def test_durable_stream_not_used_yet_after_a_restart_never_jumps(mosquitto: Any, tmp_path: Path) -> None:
    # found by the crash torture: the first commit of a new process reserved a block of 1,000 for a
    # durable stream it had loaded but not used yet, so the crash after it left a gap of 1,000
    cfg = publisher_cfg(mosquitto.port)
    state = tmp_path / "state"
    runs = []
    try:
        runs.append(PublisherProc(cfg, state))
        assert runs[-1].cmd("events 5 cam1") == "5"
        assert runs[-1].cmd("wait flushed 10") == "ok"
        runs[-1].kill()
        runs.append(PublisherProc(cfg, state))
        assert runs[-1].cmd("events 1 cam2") == "1"  # a commit that does not touch cam1
        assert runs[-1].cmd("wait flushed 10") == "ok"
        runs[-1].kill()
        runs.append(PublisherProc(cfg, state))
        assert runs[-1].cmd("events 1 cam1") == "6"
    finally:
        for r in runs:
            r.close()


def test_durable_message_nobody_subscribed_to_is_counted_and_logged(
    mosquitto: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the broker acknowledges it ("No matching subscribers", 0x10) and discards it: a loss the device
    # can see (a restarted mosquitto forgets shared subscriptions until their members subscribe again)
    pub = MqttPublisher(publisher_cfg(mosquitto.port), "dev1", tmp_path / "state")
    pub.start()
    try:
        wait_for(lambda: pub.connected, 10, "connected")
        with caplog.at_level(logging.WARNING, logger="edgedet.publish.outbox"):
            assert pub.publish_event(event("cam1", 1))
            wait_for(lambda: pub.status().outbox_depth == 0, 10, "the PUBACK")
        assert pub.status().outbox_no_subscribers == 1
        assert "No matching subscribers" in caplog.text
    finally:
        pub.stop(2.0)


def test_full_disk_store_recovers_once_the_broker_acknowledges(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    # found by the crash torture on a tmpfs: the WAL held the space that the deletes of acknowledged
    # rows needed, so the store stayed full (and replayed everything after each restart) for ever
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        port = free_port()
        cfg = publisher_cfg(port)
        box = Outbox(cfg.outbox, disk / "outbox.sqlite", retry_store_s=0.3)
        pub = MqttPublisher(cfg, "dev1", disk, outbox=box)
        pub.start()
        try:
            big = dataclasses.replace(event("cam1", 0), class_name="x" * 2000)
            for _ in range(3000):  # broker down: the disk fills
                assert pub.publish_event(big)
                if box.stats().store_errors:
                    break
            assert box.stats().store_errors >= 1 and box.stats().mode == "degraded"
            mosquitto_factory(port=port).start()
            wait_for(lambda: box.stats().depth == 0, 30, "every message acknowledged")

            def committed_again() -> bool:
                assert pub.publish_event(big)
                return pub.last_durable_outcome() == "committed"

            wait_for(committed_again, 15, "a new message committed to the store again", interval=0.3)
            assert box.stats().mode == "sqlite"
        finally:
            pub.stop(2.0)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
