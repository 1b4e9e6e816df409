"""Durable outbox, the sender half: messages are committed to the SQLite store (outbox_store.py) before
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
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Counter, Deque, Dict, List, Optional, Set, Tuple

from typing_extensions import Protocol

from edgedet.publish.config import OutboxConfig
from edgedet.publish.outbox_memory import MemoryQueue
from edgedet.publish.outbox_seqs import Numbering
from edgedet.publish.outbox_store import (
    COMMITTED,
    DROPPED,
    MEMORY,
    PENDING,
    Loaded,
    OutboxStore,
    Row,
    is_corruption,
)
from edgedet.runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

__all__ = ["Outbox", "OutboxStats", "Row", "SendFn", "SendInfo", "is_published"]

# how long after a reconnect new rows wait for paho to re-send the unacknowledged ones (keeps order)
RESYNC_TIMEOUT_S = 10.0
# acknowledged rows are deleted with the next insert, or after this long at the latest
DELETE_DELAY_S = 0.25
# acknowledged rows deleted per commit while the store is degraded (a full disk)
DELETE_CHUNK = 64
# how often the age of the oldest waiting message is read again (one indexed row from the file)
OLDEST_REFRESH_S = 1.0
# put() outcomes besides the Row states: no writer thread to wait for, or the wait ran out
QUEUED, TIMEOUT = "queued", "timeout"
# what a PUBACK/PUBCOMP said
ACK_OK, ACK_FAILED, ACK_NO_SUBSCRIBERS = "ok", "failed", "no_subscribers"
ACCEPTED = (COMMITTED, MEMORY, QUEUED)


class SendInfo(Protocol):
    """What paho's publish() returns (MQTTMessageInfo), as far as the outbox needs it."""

    mid: int

    def is_published(self) -> bool: ...


# topic, payload, qos, retain -> info, or None when the client cannot take it now (retry later);
# raises for a message it can never send (it is then counted as rejected and dropped)
SendFn = Callable[[str, bytes, int, bool], Optional[SendInfo]]


def is_published(info: Any) -> bool:
    """MQTTMessageInfo.is_published() raises for messages paho did not queue: nothing left to wait for."""
    try:
        return bool(info.is_published())
    except (ValueError, RuntimeError):
        return True


@dataclass
class _Inflight:
    row_id: int
    info: SendInfo
    size: int
    created: float
    where: str  # "db", "mem", or "gone" (its file was corrupt): what to delete after the ack


@dataclass
class OutboxStats:
    # "sqlite"; "degraded" while some messages live only in memory after a failed commit;
    # "memory" while the store cannot be used at all (or no path was given)
    mode: str
    path: Optional[str]
    epoch: str
    depth: int  # durable messages accepted and not yet acknowledged
    memory: int  # of these, held only in memory (lost if the process stops)
    bytes: int
    pending: int  # accepted, not yet committed (milliseconds' worth)
    inflight: int
    accepted: int
    acked: int
    dropped_oldest: int
    dropped_new: int
    expired: int
    rejected: int  # refused by the broker (MQTT 5 PUBACK reason >= 0x80) or by the client
    not_persisted: int  # accepted while the store was failing: kept in memory only
    store_errors: int
    commit_timeouts: int  # put() gave up waiting for its commit (returned False)
    epochs: int  # new epochs started at run time (failed commit, corrupt file)
    commits: int  # group commits (one fsync each with synchronous=full)
    no_subscribers: int  # acknowledged with "No matching subscribers" (0x10): the broker discarded them
    # sent again after "No matching subscribers" (outbox.unrouted.retry), each re-send counted
    unrouted_retries: int
    # seconds since the oldest message still waiting for its acknowledgement was accepted (None: none
    # waits); refreshed by the writer at most every OLDEST_REFRESH_S
    oldest_age_s: Optional[float] = None

    @property
    def dropped(self) -> int:
        return self.dropped_oldest + self.dropped_new + self.expired

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["dropped"] = self.dropped
        return d


_COUNTERS = (
    "accepted",
    "acked",
    "dropped_oldest",
    "dropped_new",
    "expired",
    "rejected",
    "not_persisted",
    "store_errors",
    "commit_timeouts",
    "epochs",
    "commits",
    "no_subscribers",
    "unrouted_retries",
)


class Outbox:
    def __init__(
        self,
        cfg: OutboxConfig,
        path: Optional[Path],
        *,
        retry_store_s: float = 30.0,
        max_page_count: Optional[int] = None,
    ) -> None:
        """``path`` None keeps everything in memory (no durability, sequence numbers restart).

        ``max_page_count`` caps the SQLite file (pages of 4 KiB), for testing a full disk.
        """
        self._cfg = cfg
        self.path = path
        self._store = None if path is None else OutboxStore(path, cfg.synchronous, max_page_count)
        self._retry_store_s = retry_store_s
        self.numbering = Numbering()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()  # notified after every writer turn (put() waits on it)
        self._pending: List[Row] = []
        self._pending_bytes = 0
        self._acks: Deque[Tuple[int, str, float]] = collections.deque()  # mid, ACK_*, when
        self._next_id = 1
        # writer-thread state
        self._file_top = 0  # highest row id in a file found again while rows waited in memory
        self._mem = MemoryQueue(cfg.memory_max_messages, cfg.memory_max_bytes, cfg.when_full == "drop_new")
        self._db_count = 0
        self._db_bytes = 0
        self._db_deletes: Dict[int, int] = {}  # acknowledged row id -> payload size, delete pending
        self._inflight: Dict[int, _Inflight] = {}  # mid -> entry
        self._inflight_ids: Set[int] = set()
        self._recheck: List[Tuple[int, str, float]] = []
        self._cursor = 0  # highest row id handed to the client in this process
        self._sent_top = 0  # highest row id ever handed out (above the cursor after a rewind)
        # unrouted.retry: lowest row id the broker discarded for lack of subscribers, and when it and
        # everything behind it may go out again (nothing is sent meanwhile: order holds)
        self._unrouted_from: Optional[int] = None
        self._unrouted_at = 0.0
        self._connected = False
        self._max_inflight = cfg.max_inflight
        self._resync_until: Optional[float] = None
        self._store_retry_at: Optional[float] = None
        self._last_age_check = 0.0
        self._last_commit = 0.0
        self._send: Optional[SendFn] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._closed = False
        self.failure: Optional[BaseException] = None
        self.latencies_ms: Deque[float] = collections.deque(maxlen=20_000)
        self._warn = RateLimitedLog(log, interval_s=30.0)
        # writer-thread totals, published under the lock for other threads
        self._snap_depth = 0
        self._snap_bytes = 0
        self._snap_inflight = 0
        self._snap_mem = 0
        self._snap_store_ok = False
        self._degraded = False  # a commit failed; cleared by the next commit of new rows that works
        self._snap_degraded = False
        self._snap_oldest: Optional[float] = None  # wall-clock creation time of the oldest waiting row
        self._oldest_read_at = 0.0
        self._deltas: Counter[str] = collections.Counter()
        self._committing = 0  # rows taken by the writer, commit not finished
        self._committing_bytes = 0
        self._counters = dict.fromkeys(_COUNTERS, 0)

    @property
    def epoch(self) -> str:
        return self.numbering.epoch

    @property
    def _store_ok(self) -> bool:
        return self._store is not None and self._store.is_open

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the store; never raises for store problems, falls back to memory."""
        loaded = self._open_store()
        if loaded is not None:
            self._load(loaded, first=True)

    def _open_store(self) -> Optional[Loaded]:
        store = self._store
        if store is None:
            return None
        try:
            return store.open()
        except sqlite3.DatabaseError as exc:
            if not (is_corruption(exc) and self._move_aside(exc)):
                self._store_unusable(exc)
                return None
        except OSError as exc:
            self._store_unusable(exc)
            return None
        try:
            return store.open()
        except (sqlite3.Error, OSError) as exc:
            self._store_unusable(exc)
            return None

    def _load(self, loaded: Loaded, first: bool) -> None:
        """Take over the file's epoch and numbering at start; on a re-open keep this process's own."""
        self.numbering.load(loaded, first)
        if self._store is not None:
            self._store.make_reserve()
        with self._lock:
            self._next_id = max(self._next_id, loaded.top + 1)
        if not first:
            self._file_top = loaded.top
            self._cursor = 0  # rows of the file found again were never sent by this process
        self._db_count, self._db_bytes = loaded.count, loaded.nbytes
        self._publish_snapshot()
        if loaded.count:
            log.info("outbox %s: %d durable message(s) from before to replay", self.path, loaded.count)

    def _move_aside(self, exc: BaseException) -> bool:
        assert self._store is not None
        aside = self._store.move_aside(exc)
        if aside is None:
            return False
        log.error(
            "outbox %s is corrupt (%s): moved aside to %s and starting an empty store; durable messages "
            "in the old file are NOT replayed and sequence numbers restart with a new epoch",
            self.path,
            exc,
            aside,
        )
        with self._lock:
            self._counters["store_errors"] += 1
        return True

    def _store_unusable(self, exc: BaseException) -> None:
        with self._lock:
            self._counters["store_errors"] += 1
        if self._store is not None:
            self._store.drop()
        self._store_retry_at = time.monotonic() + self._retry_store_s
        log.error(
            "outbox %s cannot be used (%s): durable messages are kept in memory only (at most %d "
            "messages / %d bytes) and are lost if the process stops; fix the folder's permissions or "
            "free disk space",
            self.path,
            exc,
            self._cfg.memory_max_messages,
            self._cfg.memory_max_bytes,
        )

    # -- caller side (any thread) --------------------------------------------------------------
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

    def _limits(self) -> str:
        return f"max_messages={self._cfg.max_messages}, max_bytes={self._cfg.max_bytes}"

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

    # -- lifecycle -----------------------------------------------------------------------------
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

    def stats(self) -> OutboxStats:
        with self._lock:
            c = dict(self._counters)
            pending = len(self._pending) + self._committing
            depth = self._snap_depth + pending
            nbytes = self._snap_bytes + self._pending_bytes + self._committing_bytes
            inflight = self._snap_inflight
            mem = self._snap_mem
            store_ok = self._snap_store_ok
            degraded = self._snap_degraded
            oldest = self._snap_oldest if depth > 0 else None
        epoch = self.epoch
        mode = "memory" if not store_ok else ("degraded" if mem or degraded else "sqlite")
        return OutboxStats(
            mode=mode,
            path=None if self.path is None else str(self.path),
            epoch=epoch,
            depth=max(depth, 0),
            memory=mem,
            bytes=max(nbytes, 0),
            pending=pending,
            inflight=inflight,
            oldest_age_s=None if oldest is None else round(max(time.time() - oldest, 0.0), 3),
            **c,
        )

    def _bump(self, key: str, n: int = 1) -> None:
        """Writer-thread counters, published together with the depth so that readers never see a
        message counted as dropped or acked while it still counts in the depth."""
        self._deltas[key] += n

    def _publish_snapshot(self, committed: bool = False) -> None:
        depth = self._db_count - len(self._db_deletes) + len(self._mem)
        nbytes = self._db_bytes - sum(self._db_deletes.values()) + self._mem.bytes
        oldest = self._oldest_created(depth)
        with self._lock:
            for key, n in self._deltas.items():
                self._counters[key] += n
            self._deltas.clear()
            if committed:
                self._committing = self._committing_bytes = 0
            self._snap_depth = depth
            self._snap_bytes = nbytes
            self._snap_inflight = len(self._inflight)
            self._snap_mem = len(self._mem)
            self._snap_store_ok = self._store_ok
            self._snap_degraded = self._degraded
            self._snap_oldest = oldest

    def _oldest_created(self, depth: int) -> Optional[float]:
        """Creation time of the oldest message not yet acknowledged, read again at most every
        OLDEST_REFRESH_S (one indexed row from the file, the head of the memory queue)."""
        if depth <= 0:
            return None
        now = time.monotonic()
        if self._snap_oldest is not None and now - self._oldest_read_at < OLDEST_REFRESH_S:
            return self._snap_oldest
        self._oldest_read_at = now
        found = [self._mem.oldest_created()]
        if self._store_ok and self._store is not None and self._db_count > len(self._db_deletes):
            try:
                in_file = self._store.oldest_created(skip=self._db_deletes)
            except sqlite3.Error:
                in_file = None  # the failure itself is handled where rows are written
            if in_file is not None:
                found.append(in_file)
        return min((t for t in found if t is not None), default=None)

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                # a recheck (paho marks a message published just after on_publish) is due in moments
                timeout = 0.002 if self._recheck else (0.05 if self._inflight or self._db_deletes else 0.2)
                self._wake.wait(timeout)
                self._wake.clear()
                with self._lock:
                    stopping = self._stopping
                self._turn()
                with self._idle:
                    self._idle.notify_all()
                if stopping:
                    with self._lock:
                        if not self._pending:
                            break
        except BaseException as exc:  # kept for status(); put() refuses from now on
            self.failure = exc
            log.error("outbox writer failed: %s", exc, exc_info=True)
        finally:
            with self._idle:
                self._idle.notify_all()

    def _turn(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._committing, self._committing_bytes = len(batch), self._pending_bytes
            self._pending_bytes = 0
        self._take_acks()
        self._commit(batch)
        self.numbering.handled(batch)
        self._publish_snapshot(committed=True)
        if batch:
            with self._idle:  # the callers of this batch go on now, not after the dispatch
                self._idle.notify_all()
        self._dispatch()
        self._publish_snapshot()

    def _take_acks(self) -> None:
        acks = self._recheck
        self._recheck = []
        while self._acks:
            acks.append(self._acks.popleft())
        for mid, outcome, when in acks:
            entry = self._inflight.get(mid)
            if entry is None:
                continue  # a QoS 0 or non-durable message
            if not is_published(entry.info):
                # paho marks the message published just after on_publish returns (or the mid
                # belongs to a QoS 0 message that reused it): look again on the next turn
                self._recheck.append((mid, outcome, when))
                continue
            del self._inflight[mid]
            self._inflight_ids.discard(entry.row_id)
            if outcome == ACK_FAILED:
                self._bump("rejected")
                self._warn.warning(
                    "rejected", "broker refused a durable message (PUBACK reason code >= 0x80); dropped"
                )
            elif outcome == ACK_NO_SUBSCRIBERS and self._keep_unrouted(entry, when):
                continue  # stays stored, not acknowledged: sent again
            else:
                self._bump("acked")
                self.latencies_ms.append((when - entry.created) * 1000.0)
                if outcome == ACK_NO_SUBSCRIBERS:
                    self._bump("no_subscribers")
                    self._warn.warning(
                        "no-subscribers",
                        "broker had no subscriber for a durable message (PUBACK 'No matching subscribers'): "
                        "it discarded it; are the consumers subscribed (a restarted mosquitto forgets "
                        "shared subscriptions until their members subscribe again)?",
                    )
            self._forget(entry.row_id, entry.size, entry.where)

    def _keep_unrouted(self, entry: _Inflight, when: float) -> bool:
        """unrouted.retry: keep a message the broker discarded for lack of subscribers, to send it
        again (same id and seq) after retry_after_s, unless it is older than give_up_after_s."""
        unrouted = self._cfg.unrouted
        if not unrouted.retry or entry.where == "gone" or when - entry.created >= unrouted.give_up_after_s:
            return False
        self._unrouted_from = min(entry.row_id, self._unrouted_from or entry.row_id)
        self._unrouted_at = time.monotonic() + unrouted.retry_after_s
        self._bump("unrouted_retries")
        self._warn.warning(
            "unrouted",
            "broker had no subscriber for a durable message (PUBACK 'No matching subscribers'): kept, "
            "sent again every %.1f s (later ones wait) until a subscriber takes it or it is %.0f s old",
            unrouted.retry_after_s,
            unrouted.give_up_after_s,
        )
        return True

    def _forget(self, row_id: int, size: int, where: str) -> None:
        """An acknowledged (or refused) row: delete it from wherever it lives now."""
        if where == "mem":
            self._mem.pop(row_id)
        elif where == "db":
            self._db_deletes[row_id] = size

    def _commit(self, batch: List[Row], retried: bool = False) -> None:
        now = time.time()
        store = self._store
        if store is not None and not store.is_open and self._store_retry_due():
            self._reopen()
        if store is None or not store.is_open:
            self._to_memory(batch, persisted_failed=store is not None)
            return
        migrate: List[Row] = []
        if self._mem:
            # degraded (a commit failed): acknowledged rows still leave the file, in commits of their
            # own, since freeing that space is the way out of a full disk
            self._delete_acked(store, now)
            if not self._store_retry_due():
                # running from memory after a write error: keep new rows behind the older ones
                self._to_memory(batch, persisted_failed=True)
                return
            migrate = self._mem.rows()
        lowest = min((r.id for r in migrate + batch), default=self._file_top + 1)
        if self._file_top and lowest <= self._file_top:
            self._renumber(migrate, batch)
        self._file_top = 0
        rows = migrate + batch
        with self._lock:
            closing = self._stopping
        new_epoch, seqs = self.numbering.to_persist(rows, closing)
        deletes = dict(self._db_deletes)
        # acknowledged rows alone do not need their own fsync at once: they ride on the next insert
        # commit or go within DELETE_DELAY_S (a crash before that re-sends them: duplicates that
        # subscribers drop by id, never losses)
        deletes_wait = not deletes or (now - self._last_commit < DELETE_DELAY_S and not self._stopping)
        if not rows and not seqs and now - self._last_age_check < 1.0 and deletes_wait and not new_epoch:
            return
        deltas: Counter[str] = collections.Counter()
        try:
            with store.transaction():
                if new_epoch:
                    store.set_epoch(self.epoch)
                store.insert(rows)
                store.delete(deletes)
                store.set_seqs(seqs)
                dropped = self._bounds(store, now, rows, deletes, deltas)
        except sqlite3.Error as exc:
            self._store_failed(exc, batch, retried)
            return
        self._last_commit = now
        if rows:
            self._degraded = False
        deltas["commits"] += 1
        self._deltas.update(deltas)
        self.numbering.committed(new_epoch, seqs)
        for i in deletes:
            self._db_deletes.pop(i, None)
        self._db_count += len(rows) - len(deletes) - len(dropped)
        self._db_bytes += sum(len(r.payload) for r in rows) - sum(deletes.values()) - sum(dropped.values())
        for r in batch:
            r.state = DROPPED if r.id in dropped else COMMITTED
        if migrate:
            moved = {r.id for r in migrate}
            for r in migrate:
                self._mem.pop(r.id)
            for entry in self._inflight.values():
                if entry.row_id in moved:
                    entry.where = "db"  # its ack must now delete it from the file
            log.warning(
                "outbox %s is writable again: %d message(s) from memory stored", self.path, len(migrate)
            )
            self._store_retry_at = None
            store.make_reserve()

    def _delete_acked(self, store: OutboxStore, now: float) -> None:
        """Delete acknowledged rows in small commits of their own (degraded mode): on a full disk a
        large delete needs more WAL than there is room for; small ones with checkpoints between fit."""
        pending = list(self._db_deletes.items())
        if not pending or (now - self._last_commit < DELETE_DELAY_S and not self._stopping):
            return
        for start in range(0, len(pending), DELETE_CHUNK):
            chunk = dict(pending[start : start + DELETE_CHUNK])
            for attempt in (1, 2):
                try:
                    with store.transaction():
                        store.delete(chunk)
                    break
                except sqlite3.Error as exc:
                    if attempt == 2:
                        self._warn.error(
                            "delete", "outbox %s: cannot delete acknowledged rows: %s", self.path, exc
                        )
                        return
                    self._make_room()
            self._last_commit = now
            for i in chunk:
                self._db_deletes.pop(i, None)
            self._db_count -= len(chunk)
            self._db_bytes -= sum(chunk.values())

    def _make_room(self, release_reserve: bool = True) -> None:
        """On a full disk: checkpoint, so that the WAL (which only a checkpoint empties) stops holding
        space; before deletes that cannot commit, give the reserve back first."""
        store = self._store
        if store is None or not store.is_open:
            return
        if release_reserve and store.release_reserve():
            log.warning("outbox %s: disk space reserve given back so the store can recover", self.path)
        try:
            store.checkpoint()
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint on a full disk: %s", exc)

    def _renumber(self, migrate: List[Row], batch: List[Row]) -> None:
        """The file found again holds ids this process also gave out while it ran from memory: give
        every row not in the file a new id after the file's, keeping their order."""
        mapping: Dict[int, int] = {}
        with self._lock:
            new = self._file_top
            for row in migrate:
                new += 1
                mapping[row.id] = new
                row.id = new
            for row in batch + self._pending:
                new += 1
                row.id = new
            self._next_id = new + 1
        self._mem.reindex(migrate)
        for entry in self._inflight.values():
            entry.row_id = mapping.get(entry.row_id, entry.row_id)
        self._inflight_ids = {mapping.get(i, i) for i in self._inflight_ids}
        if self._unrouted_from is not None:
            self._unrouted_from = mapping.get(self._unrouted_from, self._unrouted_from)
        self._cursor = 0

    def _bounds(
        self,
        store: OutboxStore,
        now: float,
        rows: List[Row],
        deletes: Dict[int, int],
        deltas: Counter[str],
    ) -> Dict[int, int]:
        """Apply age/count/bytes bounds inside the open transaction; returns dropped id -> size."""
        cfg = self._cfg
        dropped: Dict[int, int] = {}
        count = self._db_count + len(rows) - len(deletes)
        nbytes = self._db_bytes + sum(len(r.payload) for r in rows) - sum(deletes.values())
        if now - self._last_age_check >= 1.0:
            self._last_age_check = now
            old = [(i, s) for i, s in store.older_than(now - cfg.max_age_s) if i not in self._inflight_ids]
            if old:
                store.delete(i for i, _ in old)
                dropped.update(old)
                count -= len(old)
                nbytes -= sum(s for _, s in old)
                deltas["expired"] += len(old)
                self._warn.warning(
                    "expired",
                    "outbox: %d durable message(s) older than max_age_s=%s dropped",
                    len(old),
                    cfg.max_age_s,
                )
        if count <= cfg.max_messages and nbytes <= cfg.max_bytes:
            return dropped
        over_n = count - cfg.max_messages
        sel: List[Tuple[int, int]] = []
        if cfg.when_full == "drop_new":
            # put() refuses early; here only the newest rows of this batch can still be over
            candidates = [(r.id, len(r.payload)) for r in sorted(rows, key=lambda r: r.id, reverse=True)]
            key = "dropped_new"
        else:
            candidates = store.oldest(max(over_n, 0) + len(self._inflight_ids) + 1000)
            key = "dropped_oldest"
        for i, s in candidates:
            if count <= cfg.max_messages and nbytes <= cfg.max_bytes:
                break
            if i in self._inflight_ids or i in dropped or i in deletes:
                continue
            sel.append((i, s))
            count -= 1
            nbytes -= s
        if sel:
            store.delete(i for i, _ in sel)
            dropped.update(sel)
            deltas[key] += len(sel)
            self._warn.warning(
                "full", "outbox full (%s): %s applied to %d message(s)", self._limits(), key, len(sel)
            )
        return dropped

    def _store_retry_due(self) -> bool:
        return self._store_retry_at is not None and time.monotonic() >= self._store_retry_at

    def _reopen(self) -> None:
        self._store_retry_at = time.monotonic() + self._retry_store_s
        loaded = self._open_store()
        if loaded is not None:
            self._load(loaded, first=False)
            log.warning("outbox %s could be opened again", self.path)
            self._store_retry_at = time.monotonic()  # move what waited in memory now

    def _store_failed(self, exc: sqlite3.Error, batch: List[Row], retried: bool = False) -> None:
        self._degraded = True
        with self._lock:
            self._counters["store_errors"] += 1
        self._store_retry_at = time.monotonic() + self._retry_store_s
        if is_corruption(exc) and self._store is not None:
            lost = self._db_count
            self._db_count = self._db_bytes = 0
            self._db_deletes.clear()
            for entry in self._inflight.values():
                if entry.where == "db":
                    entry.where = "gone"
            moved = self._move_aside(exc)
            if moved:
                log.error("outbox: %d stored message(s) were in the corrupt file", lost)
            self._start_epoch("the store file is corrupt", batch)
            if moved and not retried:
                self._reopen()  # a new, empty file at once
                if self._store_ok:
                    self._commit(batch, retried=True)
                    return
        else:
            self._warn.error(
                "store",
                "outbox %s: cannot write (%s): new durable messages are kept in memory only until the store "
                "works again (retry every %.0f s); free disk space or fix permissions",
                self.path,
                exc,
                self._retry_store_s,
            )
            if self.numbering.in_file:
                self._start_epoch("a commit failed", batch)
            self._make_room(release_reserve=False)  # the reserve is for the deletes, not more inserts
        self._to_memory(batch, persisted_failed=True)

    def _start_epoch(self, why: str, unsent: List[Row]) -> None:
        """New numbering: sequence numbers given out but not committed under the old epoch would be
        reused after a restart. Rows not yet sent get re-stamped into the new epoch."""
        with self._lock:  # no enqueue in between: pending rows keep their order
            old = self.numbering.start_epoch(unsent + self._pending)
            self._counters["epochs"] += 1
        log.warning("outbox: %s; sequence numbers go on under a new epoch %s (was %s)", why, self.epoch, old)

    def _to_memory(self, batch: List[Row], persisted_failed: bool) -> None:
        for row in batch:
            self._bump("dropped_oldest", self._mem.add(row, self._inflight_ids))
            if row.state == DROPPED:
                self._bump("dropped_new")
                self._warn.warning("memfull", "outbox memory queue full: durable message dropped")
            elif persisted_failed:
                self._bump("not_persisted")

    # -- dispatch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        send = self._send
        with self._lock:
            connected = self._connected
            resync_until = self._resync_until
        if send is None or not connected:
            return
        if resync_until is not None:
            if self._inflight and time.monotonic() < resync_until:
                return  # paho is re-sending the unacknowledged ones first: keeps the order
            if self._inflight:
                log.warning(
                    "outbox: %d message(s) not acknowledged after reconnect; going on", len(self._inflight)
                )
            with self._lock:
                self._resync_until = None
        if self._unrouted_from is not None:
            if time.monotonic() < self._unrouted_at:
                return  # a message waits for a subscriber: the ones behind it wait too (order)
            # from the first discarded one on, again; what was acknowledged meanwhile is skipped
            self._cursor = min(self._cursor, self._unrouted_from - 1)
            self._unrouted_from = None
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return
        for row, where in self._fetch(room):
            try:
                info = send(row.topic, row.payload, row.qos, row.retain)
            except Exception as exc:  # a message the client can never send: do not block the rest
                self._bump("rejected")
                self._warn.error(
                    "send", "outbox: durable message on %s refused and dropped: %s", row.topic, exc
                )
                self._cursor = max(self._cursor, row.id)
                self._forget(row.id, len(row.payload), where)
                continue
            if info is None:
                return  # client queue full or not connected after all: retry next turn
            self._cursor = max(self._cursor, row.id)
            self._sent_top = max(self._sent_top, row.id)
            self._inflight[info.mid] = _Inflight(row.id, info, len(row.payload), row.created, where)
            self._inflight_ids.add(row.id)

    def _fetch(self, limit: int) -> List[Tuple[Row, str]]:
        """Rows after the cursor in id order, from the store and the memory queue merged; rows in
        flight or acknowledged are skipped (the cursor goes back to 0 when a file is found again)."""
        out: List[Tuple[Row, str]] = []
        skip = self._inflight_ids
        if self._store is not None and self._store.is_open:
            try:
                # after a rewind (a file found again, unrouted.retry) rows already in flight or
                # acknowledged lie after the cursor: read past them
                rewound = self._cursor == 0 or self._cursor < self._sent_top
                extra = len(skip) + len(self._db_deletes) if rewound else 0
                for row in self._store.fetch(self._cursor, limit + extra):
                    if row.id not in self._db_deletes and row.id not in skip:
                        out.append((row, "db"))
            except sqlite3.Error as exc:
                self._warn.error("read", "outbox %s: cannot read: %s", self.path, exc)
        if self._mem:
            mem = [(r, "mem") for r in self._mem.after(self._cursor, skip, limit)]
            out = sorted(out + mem, key=lambda x: x[0].id)
        return out[:limit]
