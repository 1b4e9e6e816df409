"""Durable outbox, the caller-facing half: messages are committed to the SQLite store (outbox_store.py) before
``put()`` returns and before they are published, and deleted only when the broker acknowledges them
(PUBACK/PUBCOMP).

Threads: a caller appends its message to a pending list and waits (bounded, ``commit_timeout_s``) until
the writer thread ("edgedet-outbox") has committed it; the writer commits everything pending in one
transaction (group commit: concurrent callers share one fsync), applies the bounds, deletes what was
acknowledged, then hands committed rows to MQTT in id order, at most ``max_inflight`` unacknowledged.
paho calls ``on_ack`` from its network thread; that only appends to a deque.

Failure policy: a corrupt file is moved aside and a new one created; an unwritable folder or a full
disk switches new messages to a bounded in-memory queue (counted as ``not_persisted``; ``put()`` says
so) and the store is retried every ``retry_store_s``. Sequence numbers are never reused: the first
failed commit under an epoch that the file knows starts a new epoch, and so does a corrupt file, and
messages not yet committed are re-stamped into it before anything sends them.

Modules, by who runs the code: this one (put/enqueue+wait, flush, acks from paho, lifecycle; any
thread), outbox_writer.py (the writer thread's turn: acks, dispatch), outbox_commit.py (its commits,
bounds and degraded mode), outbox_state.py (the state and stats they share), outbox_store.py (SQL),
outbox_seqs.py (numbering), outbox_memory.py (the in-memory fallback queue).
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Tuple

from edgedet.publish.outbox_state import (
    ACK_FAILED,
    ACK_NO_SUBSCRIBERS,
    ACK_OK,
    OutboxStats,
    SendFn,
    SendInfo,
    is_published,
    log,
)
from edgedet.publish.outbox_store import COMMITTED, DROPPED, MEMORY, PENDING, Row
from edgedet.publish.outbox_writer import OutboxWriter

__all__ = ["ACCEPTED", "Outbox", "OutboxStats", "Row", "SendFn", "SendInfo", "is_published"]

# how long after a reconnect new rows wait for paho to re-send the unacknowledged ones (keeps order)
RESYNC_TIMEOUT_S = 10.0
# put() outcomes besides the Row states: no writer thread to wait for, or the wait ran out
QUEUED, TIMEOUT = "queued", "timeout"
ACCEPTED = (COMMITTED, MEMORY, QUEUED)


class Outbox(OutboxWriter):
    """The caller-facing outbox: put/enqueue+wait, flush, stats, acknowledgements from paho, and the
    writer thread's lifecycle. The writer's own turn is in outbox_writer.py and outbox_commit.py."""

    def open(self) -> None:
        """Open (or create) the store; never raises for store problems, falls back to memory."""
        loaded = self._open_store()
        if loaded is not None:
            self._load(loaded, first=True)

    def next_seq(self, stream: str, durable: bool = False) -> Tuple[int, str]:
        """The next (seq, epoch) of ``stream``: both at once, the epoch may change at any time."""
        seq, epoch, reserve = self.numbering.next(stream, durable)
        if reserve:
            self._wake.set()  # the writer reserves the next block
        return seq, epoch

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        stream: str = "",
        seq: int = 0,
        epoch: str = "",
    ) -> Optional[Row]:
        """Hand a message to the writer without waiting; None when refused (closed, writer dead,
        drop_new with a full outbox). Call in ``seq`` order per stream; then ``wait(row)``."""
        size = len(payload)
        with self._lock:
            if self._closed or (self._thread is not None and not self._thread.is_alive()):
                self._counters["dropped_new"] += 1
                if not self._closed:
                    self._warn.error("dead", "outbox writer is not running (%s): refusing", self.failure)
                return None
            if self._cfg.when_full == "drop_new" and self._would_overflow_locked(size):
                self._counters["dropped_new"] += 1
                self._warn.warning("full", "outbox full (%s): refusing new durable messages", self._limits())
                return None
            # the pending list is drained every few ms; it only grows if the writer is stuck
            while self._pending and (
                len(self._pending) >= self._cfg.memory_max_messages
                or self._pending_bytes + size > self._cfg.memory_max_bytes
            ):
                old = self._pending.pop(0)
                old.state = DROPPED
                self._pending_bytes -= len(old.payload)
                self._counters["dropped_oldest"] += 1
                self._warn.warning(
                    "backlog", "outbox writer is behind: dropping the oldest uncommitted message"
                )
            row = Row(self._next_id, time.time(), topic, qos, bool(retain), payload, stream, seq, epoch)
            self.numbering.restamp(row)  # numbered before an epoch change: next number of the new one
            self._next_id += 1
            self._pending.append(row)
            self._pending_bytes += len(row.payload)
            self._counters["accepted"] += 1
        self._wake.set()
        return row

    def wait(self, row: Row, timeout: Optional[float] = None) -> str:
        """Until the writer stored ``row``: COMMITTED, MEMORY (store failing), DROPPED, or TIMEOUT
        (counted; the row may still be committed later). QUEUED when no writer runs yet."""
        if self._thread is None:
            return QUEUED if row.state == PENDING else row.state
        limit = self._cfg.commit_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._idle:
            while row.state == PENDING:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    with self._lock:
                        self._counters["commit_timeouts"] += 1
                    self._warn.warning(
                        "commit-timeout",
                        "outbox: a durable message was not committed within %.1f s (slow disk?): put() "
                        "returns False",
                        limit,
                    )
                    return TIMEOUT
                self._idle.wait(left)
        return row.state

    def put(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        stream: str = "",
        seq: int = 0,
        epoch: str = "",
    ) -> bool:
        """Accept a durable message and return once it is committed (or, while the store fails, kept
        in memory, counted as not_persisted); False when refused or not committed in time."""
        row = self.enqueue(topic, payload, qos, retain, stream, seq, epoch)
        return row is not None and self.wait(row) in ACCEPTED

    def _would_overflow_locked(self, size: int) -> bool:
        count = self._snap_depth + self._committing + len(self._pending)
        nbytes = self._snap_bytes + self._committing_bytes + self._pending_bytes
        return count + 1 > self._cfg.max_messages or nbytes + size > self._cfg.max_bytes

    def on_ack(self, mid: int, failed: bool = False, no_subscribers: bool = False) -> None:
        """From paho's network thread: must not block nor raise. ``failed``: the broker refused the
        message (reason >= 0x80); ``no_subscribers``: it took it but had nobody to give it to (MQTT 5
        reason 0x10, "No matching subscribers": the broker discards it).

        Acks are not urgent (their deletes are batched): the writer is woken only when the in-flight
        window runs low, otherwise it collects them on its next turn."""
        outcome = ACK_FAILED if failed else (ACK_NO_SUBSCRIBERS if no_subscribers else ACK_OK)
        self._acks.append((mid, outcome, time.time()))
        if len(self._acks) * 4 >= self._max_inflight:
            self._wake.set()

    def set_connected(self, connected: bool, max_inflight: Optional[int] = None) -> None:
        """From paho's thread; ``max_inflight`` lowers ``cfg.max_inflight`` for this connection."""
        with self._lock:
            self._connected = connected
            if connected:
                self._max_inflight = min(self._cfg.max_inflight, max_inflight or self._cfg.max_inflight)
                self._resync_until = time.monotonic() + RESYNC_TIMEOUT_S
        self._wake.set()

    def start(self, send: SendFn) -> None:
        self._send = send
        self._thread = threading.Thread(target=self._run, name="edgedet-outbox", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every accepted message is committed and, while connected, acknowledged."""
        deadline = time.monotonic() + max(timeout, 0.0)
        self._wake.set()
        with self._idle:
            while True:
                st = self.stats()
                if st.pending == 0 and (st.depth == 0 or not self._connected):
                    return st.depth == 0
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.05))

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending, write exact sequence numbers, close the file."""
        with self._lock:
            self._closed = True
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "outbox writer did not stop within %.1f s; uncommitted messages may be lost", timeout
                )
                return
        elif self._store_ok:
            self._turn()  # never started: still commit what was put
        if self._store is not None:
            self._store.close()
