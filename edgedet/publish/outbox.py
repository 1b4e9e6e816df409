"""Durable outbox: messages are committed to SQLite (WAL) before they are published and deleted only
when the broker acknowledges them (PUBACK/PUBCOMP); the same file keeps the per-stream sequence numbers.

Threads: callers (the pipeline) only append to an in-memory pending list and return at once. One
writer thread ("edgedet-outbox") owns the SQLite connection: each turn it commits everything pending
in one transaction (group commit: one fsync for many messages), applies the bounds, deletes what was
acknowledged, then hands committed rows to MQTT in id order, at most ``max_inflight`` unacknowledged.
paho calls ``on_ack`` from its network thread; that only appends to a deque.

Failure policy: a corrupt file is moved aside and a new one created; an unwritable folder or a full
disk switches new messages to a bounded in-memory queue (counted as ``not_persisted``) and the store is
retried every ``retry_store_s``; nothing raises into the pipeline and nothing is dropped uncounted.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Counter, Deque, Dict, List, Optional, Set, Tuple

from typing_extensions import Protocol

from edgedet.publish.config import OutboxConfig
from edgedet.runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# non-durable streams reserve sequence numbers in blocks so a crash never reuses one
SEQ_RESERVE = 1000
# how long after a reconnect new rows wait for paho to re-send the unacknowledged ones (keeps order)
RESYNC_TIMEOUT_S = 10.0
# acknowledged rows are deleted with the next insert, or after this long at the latest
DELETE_DELAY_S = 0.25
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, created REAL NOT NULL, topic TEXT NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS seqs(stream TEXT PRIMARY KEY, last INTEGER NOT NULL)",
)


class SendInfo(Protocol):
    """What paho's publish() returns (MQTTMessageInfo), as far as the outbox needs it."""

    mid: int

    def is_published(self) -> bool: ...


# topic, payload, qos, retain -> info, or None when the client cannot take it now (retry later)
SendFn = Callable[[str, bytes, int, bool], Optional[SendInfo]]


@dataclass
class Row:
    id: int
    created: float
    topic: str
    qos: int
    retain: bool
    payload: bytes
    stream: str = ""
    seq: int = 0


@dataclass
class _Inflight:
    row_id: int
    info: SendInfo
    size: int
    created: float
    in_memory: bool


@dataclass
class OutboxStats:
    mode: str  # "sqlite", or "memory" while the store cannot be written
    path: Optional[str]
    depth: int  # durable messages accepted and not yet acknowledged
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

    @property
    def dropped(self) -> int:
        return self.dropped_oldest + self.dropped_new + self.expired

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["dropped"] = self.dropped
        return d


def _is_published(info: SendInfo) -> bool:
    try:
        return bool(info.is_published())
    except Exception:  # paho raises for messages it did not queue: nothing left to wait for
        return True


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _is_corruption(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


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
        self._retry_store_s = retry_store_s
        self._max_page_count = max_page_count
        self._db: Optional[sqlite3.Connection] = None
        self.epoch = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._pending: List[Row] = []
        self._pending_bytes = 0
        self._acks: Deque[Tuple[int, bool, float]] = collections.deque()
        self._seqs: Dict[str, int] = {}
        self._durable_streams: Set[str] = set()
        self._seq_persisted: Dict[str, int] = {}
        self._next_id = 1
        # writer-thread state
        self._mem: collections.OrderedDict[int, Row] = collections.OrderedDict()
        self._mem_bytes = 0
        self._db_count = 0
        self._db_bytes = 0
        self._db_deletes: Dict[int, int] = {}  # acknowledged row id -> payload size, delete pending
        self._inflight: Dict[int, _Inflight] = {}  # mid -> entry
        self._inflight_ids: Set[int] = set()
        self._recheck: List[Tuple[int, bool, float]] = []
        self._cursor = 0  # highest row id handed to the client in this process
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
        self._deltas: Counter[str] = collections.Counter()
        self._committing = 0  # rows taken by the writer, commit not finished
        self._committing_bytes = 0
        self._counters = dict.fromkeys(
            (
                "accepted",
                "acked",
                "dropped_oldest",
                "dropped_new",
                "expired",
                "rejected",
                "not_persisted",
                "store_errors",
            ),
            0,
        )

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the store; never raises for store problems, falls back to memory."""
        if self.path is None:
            return
        try:
            self._db = self._connect(self.path)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc) and self._move_aside(self.path, exc):
                try:
                    self._db = self._connect(self.path)
                except (sqlite3.Error, OSError) as exc2:
                    self._store_unusable(exc2)
            else:
                self._store_unusable(exc)
        except OSError as exc:
            self._store_unusable(exc)
        if self._db is not None:
            self._load()

    def _connect(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning(
                    "outbox %s: journal_mode is %s, not WAL (file system without WAL support?)", path, mode
                )
            db.execute(f"PRAGMA synchronous={self._cfg.synchronous.upper()}")
            if self._max_page_count is not None:
                db.execute(f"PRAGMA max_page_count={int(self._max_page_count)}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {check})")
            for stmt in _SCHEMA:
                db.execute(stmt)
        except BaseException:
            db.close()
            raise
        return db

    def _load(self) -> None:
        """Read epoch, sequence numbers and depth; on a re-open keep what this process already used."""
        db = self._db
        if db is None:
            return
        try:
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            seqs = {str(k): int(v) for k, v in db.execute("SELECT stream, last FROM seqs")}
            count, size, top = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MAX(id), 0) FROM outbox"
            ).fetchone()
            with self._lock:
                fresh = not self._seqs and self._next_id == 1
                if row is not None and fresh:
                    self.epoch = str(row[0])
                elif row is None or str(row[0]) != self.epoch:
                    # a new file, or one found again after running from memory: the numbering this
                    # process already published goes on, under its epoch
                    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('epoch', ?)", (self.epoch,))
                for k, v in seqs.items():
                    if v > self._seqs.get(k, 0):
                        self._seqs[k] = v
                    self._seq_persisted[k] = v
                self._next_id = max(self._next_id, int(top) + 1)
        except sqlite3.Error as exc:
            self._store_unusable(exc)
            return
        self._db_count, self._db_bytes = int(count), int(size)
        self._publish_snapshot()
        if self._db_count:
            log.info("outbox %s: %d durable message(s) from before to replay", self.path, self._db_count)

    def _move_aside(self, path: Path, exc: BaseException) -> bool:
        aside = path.with_name(f"{path.name}.corrupt-{_utc_stamp()}")
        try:
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                side = Path(str(path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
        except OSError as err:
            log.error("outbox %s is corrupt (%s) and cannot be moved aside: %s", path, exc, err)
            return False
        log.error(
            "outbox %s is corrupt (%s): moved aside to %s and starting an empty store; durable messages "
            "in the old file are NOT replayed and sequence numbers restart with a new epoch",
            path,
            exc,
            aside,
        )
        with self._lock:
            self._counters["store_errors"] += 1
        return True

    def _store_unusable(self, exc: BaseException) -> None:
        with self._lock:
            self._counters["store_errors"] += 1
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None
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

    # -- caller side (any thread, never blocks on I/O) -----------------------------------------
    def next_seq(self, stream: str, durable: bool = False) -> int:
        with self._lock:
            seq = self._seqs.get(stream, 0) + 1
            self._seqs[stream] = seq
            if durable:
                self._durable_streams.add(stream)
        if not durable and seq > self._seq_persisted.get(stream, 0) - SEQ_RESERVE // 2:
            self._wake.set()  # the writer reserves the next block
        return seq

    def put(self, topic: str, payload: bytes, qos: int, retain: bool, stream: str = "", seq: int = 0) -> bool:
        """Accept a durable message; False when refused (drop_new policy with a full outbox)."""
        size = len(payload)
        with self._lock:
            if self._closed:
                self._counters["dropped_new"] += 1
                return False
            if self._cfg.when_full == "drop_new" and self._would_overflow_locked(size):
                self._counters["dropped_new"] += 1
                self._warn.warning("full", "outbox full (%s): refusing new durable messages", self._limits())
                return False
            # the pending list is drained every few ms; it only grows if the writer is stuck
            while self._pending and (
                len(self._pending) >= self._cfg.memory_max_messages
                or self._pending_bytes + size > self._cfg.memory_max_bytes
            ):
                old = self._pending.pop(0)
                self._pending_bytes -= len(old.payload)
                self._counters["dropped_oldest"] += 1
                self._warn.warning(
                    "backlog", "outbox writer is behind: dropping the oldest uncommitted message"
                )
            row = Row(self._next_id, time.time(), topic, qos, bool(retain), payload, stream, seq)
            self._next_id += 1
            self._pending.append(row)
            self._pending_bytes += size
            self._counters["accepted"] += 1
        self._wake.set()
        return True

    def _would_overflow_locked(self, size: int) -> bool:
        count = self._snap_depth + self._committing + len(self._pending)
        nbytes = self._snap_bytes + self._committing_bytes + self._pending_bytes
        return count + 1 > self._cfg.max_messages or nbytes + size > self._cfg.max_bytes

    def _limits(self) -> str:
        return f"max_messages={self._cfg.max_messages}, max_bytes={self._cfg.max_bytes}"

    def on_ack(self, mid: int, failed: bool = False) -> None:
        """From paho's network thread: must not block nor raise.

        Acks are not urgent (their deletes are batched): the writer is woken only when the in-flight
        window runs low, otherwise it collects them on its next turn. Fewer wake-ups keep the
        outbox's cost to the inference threads small."""
        self._acks.append((mid, failed, time.time()))
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
        elif self._db is not None:
            self._turn()  # never started: still commit what was put
        self._close_db()

    def stats(self) -> OutboxStats:
        with self._lock:
            c = dict(self._counters)
            pending = len(self._pending) + self._committing
            depth = self._snap_depth + pending
            nbytes = self._snap_bytes + self._pending_bytes + self._committing_bytes
            inflight = self._snap_inflight
        return OutboxStats(
            mode="sqlite" if self._db is not None else "memory",
            path=None if self.path is None else str(self.path),
            depth=max(depth, 0),
            bytes=max(nbytes, 0),
            pending=pending,
            inflight=inflight,
            **c,
        )

    def _bump(self, key: str, n: int = 1) -> None:
        """Writer-thread counters, published together with the depth so that readers never see a
        message counted as dropped or acked while it still counts in the depth."""
        self._deltas[key] += n

    def _publish_snapshot(self, committed: bool = False) -> None:
        depth = self._db_count - len(self._db_deletes) + len(self._mem)
        nbytes = self._db_bytes - sum(self._db_deletes.values()) + self._mem_bytes
        with self._lock:
            for key, n in self._deltas.items():
                self._counters[key] += n
            self._deltas.clear()
            if committed:
                self._committing = self._committing_bytes = 0
            self._snap_depth = depth
            self._snap_bytes = nbytes
            self._snap_inflight = len(self._inflight)

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
        except BaseException as exc:  # kept for status(); the pipeline never sees it
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
        self._publish_snapshot(committed=True)
        self._dispatch()
        self._publish_snapshot()

    def _take_acks(self) -> None:
        acks = self._recheck
        self._recheck = []
        while self._acks:
            acks.append(self._acks.popleft())
        for mid, failed, when in acks:
            entry = self._inflight.get(mid)
            if entry is None:
                continue  # a QoS 0 or non-durable message
            if not _is_published(entry.info):
                # paho marks the message published just after on_publish returns (or the mid
                # belongs to a QoS 0 message that reused it): look again on the next turn
                self._recheck.append((mid, failed, when))
                continue
            del self._inflight[mid]
            self._inflight_ids.discard(entry.row_id)
            if failed:
                self._bump("rejected")
                self._warn.warning(
                    "rejected", "broker refused a durable message (PUBACK reason code >= 0x80); dropped"
                )
            else:
                self._bump("acked")
                self.latencies_ms.append((when - entry.created) * 1000.0)
            self._forget(entry.row_id, entry.size, entry.in_memory)

    def _forget(self, row_id: int, size: int, in_memory: bool) -> None:
        if in_memory or row_id in self._mem:
            row = self._mem.pop(row_id, None)
            if row is not None:
                self._mem_bytes -= len(row.payload)
            return
        self._db_deletes[row_id] = size

    def _seq_rows(self, batch: List[Row]) -> List[Tuple[str, int]]:
        """Sequence numbers to persist: exact for durable streams, reserved blocks for the rest."""
        out: Dict[str, int] = {}
        for row in batch:
            if row.stream and row.seq > out.get(row.stream, 0):
                out[row.stream] = row.seq
        with self._lock:
            current = dict(self._seqs)
            closing = self._stopping
            durable = set(self._durable_streams)
        for stream, value in current.items():
            persisted = self._seq_persisted.get(stream, 0)
            if closing:
                if value != persisted:
                    out[stream] = value
            elif stream not in durable and value > persisted - SEQ_RESERVE // 2:
                out[stream] = value + SEQ_RESERVE
        return [(s, v) for s, v in out.items() if v > self._seq_persisted.get(s, 0) or closing]

    def _commit(self, batch: List[Row]) -> None:
        now = time.time()
        db = self._db
        if db is None and self.path is not None and self._store_retry_due():
            self.open_again()
            db = self._db
        if db is None:
            self._to_memory(batch, persisted_failed=self.path is not None)
            return
        migrate: List[Row] = []
        if self._mem:
            if self._store_retry_due():
                migrate = list(self._mem.values())
            else:
                # running from memory after a write error: keep new rows behind the older ones
                self._to_memory(batch, persisted_failed=True)
                batch = []
        rows = migrate + batch
        seqs = self._seq_rows(rows)
        deletes = dict(self._db_deletes)
        # acknowledged rows alone do not need their own fsync at once: they ride on the next insert
        # commit or go within DELETE_DELAY_S (a crash before that re-sends them: duplicates that
        # subscribers drop by id, never losses)
        deletes_wait = not deletes or (now - self._last_commit < DELETE_DELAY_S and not self._stopping)
        if not rows and not seqs and now - self._last_age_check < 1.0 and deletes_wait:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            if rows:
                db.executemany(
                    "INSERT INTO outbox(id, created, topic, qos, retain, payload) VALUES(?,?,?,?,?,?)",
                    [(r.id, r.created, r.topic, r.qos, int(r.retain), r.payload) for r in rows],
                )
            if deletes:
                db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in deletes])
            if seqs:
                db.executemany("INSERT OR REPLACE INTO seqs(stream, last) VALUES(?,?)", seqs)
            deltas: Counter[str] = collections.Counter()
            dropped = self._bounds(db, now, rows, deletes, deltas)
            db.execute("COMMIT")
            self._last_commit = now
            self._deltas.update(deltas)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._store_failed(exc, batch)
            return
        for s, v in seqs:
            self._seq_persisted[s] = v
        for i in deletes:
            self._db_deletes.pop(i, None)
        self._db_count += len(rows) - len(deletes) - len(dropped)
        self._db_bytes += sum(len(r.payload) for r in rows) - sum(deletes.values()) - sum(dropped.values())
        for r in migrate:
            self._mem.pop(r.id, None)
            self._mem_bytes -= len(r.payload)
        if migrate:
            log.warning(
                "outbox %s is writable again: %d message(s) from memory stored", self.path, len(migrate)
            )
            self._store_retry_at = None

    def _bounds(
        self,
        db: sqlite3.Connection,
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
            cutoff = now - cfg.max_age_s
            old = db.execute(
                "SELECT id, LENGTH(payload) FROM outbox WHERE created < ? ORDER BY id LIMIT 10000", (cutoff,)
            ).fetchall()
            old = [(i, s) for i, s in old if i not in self._inflight_ids]
            if old:
                db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i, _ in old])
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
        if cfg.when_full == "drop_new":
            # put() refuses early; here only the newest rows of this batch can still be over
            victims = sorted(rows, key=lambda r: r.id, reverse=True)
            sel: List[Tuple[int, int]] = []
            for r in victims:
                if count <= cfg.max_messages and nbytes <= cfg.max_bytes:
                    break
                sel.append((r.id, len(r.payload)))
                count -= 1
                nbytes -= len(r.payload)
            key = "dropped_new"
        else:
            sel = []
            cur = db.execute(
                "SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT ?",
                (max(over_n, 0) + len(self._inflight_ids) + 1000,),
            )
            for i, s in cur:
                if count <= cfg.max_messages and nbytes <= cfg.max_bytes:
                    break
                if i in self._inflight_ids or i in dropped or i in deletes:
                    continue
                sel.append((i, s))
                count -= 1
                nbytes -= s
            key = "dropped_oldest"
        if sel:
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i, _ in sel])
            dropped.update(sel)
            deltas[key] += len(sel)
            self._warn.warning(
                "full", "outbox full (%s): %s applied to %d message(s)", self._limits(), key, len(sel)
            )
        return dropped

    def _store_retry_due(self) -> bool:
        return self._store_retry_at is not None and time.monotonic() >= self._store_retry_at

    def open_again(self) -> None:
        self._store_retry_at = time.monotonic() + self._retry_store_s
        self.open()
        if self._db is not None:
            log.warning("outbox %s could be opened again", self.path)
            self._store_retry_at = time.monotonic()  # move what waited in memory now

    def _store_failed(self, exc: sqlite3.Error, batch: List[Row]) -> None:
        with self._lock:
            self._counters["store_errors"] += 1
        self._store_retry_at = time.monotonic() + self._retry_store_s
        if _is_corruption(exc) and self.path is not None:
            self._close_db()
            lost = self._db_count
            self._db_count = self._db_bytes = 0
            self._db_deletes.clear()
            if self._move_aside(self.path, exc):
                log.error("outbox: %d stored message(s) were in the corrupt file", lost)
        else:
            self._warn.error(
                "store",
                "outbox %s: cannot write (%s): new durable messages are kept in memory only until the store "
                "works again (retry every %.0f s); free disk space or fix permissions",
                self.path,
                exc,
                self._retry_store_s,
            )
        self._to_memory(batch, persisted_failed=True)

    def _to_memory(self, batch: List[Row], persisted_failed: bool) -> None:
        cfg = self._cfg
        for row in batch:
            size = len(row.payload)
            while self._mem and (
                len(self._mem) >= cfg.memory_max_messages or self._mem_bytes + size > cfg.memory_max_bytes
            ):
                if cfg.when_full == "drop_new":
                    break
                victim_id = next((i for i in self._mem if i not in self._inflight_ids), None)
                if victim_id is None:
                    break
                victim = self._mem.pop(victim_id)
                self._mem_bytes -= len(victim.payload)
                self._bump("dropped_oldest")
            if len(self._mem) >= cfg.memory_max_messages or self._mem_bytes + size > cfg.memory_max_bytes:
                self._bump("dropped_new")
                self._warn.warning("memfull", "outbox memory queue full: durable message dropped")
                continue
            self._mem[row.id] = row
            self._mem_bytes += size
            if persisted_failed:
                self._bump("not_persisted")

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            db.close()
        except sqlite3.Error as exc:
            log.warning("outbox %s: close failed: %s", self.path, exc)

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
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return
        for row, in_memory in self._fetch(room):
            try:
                info = send(row.topic, row.payload, row.qos, row.retain)
            except Exception as exc:  # a message the client can never send: do not block the rest
                self._bump("rejected")
                self._warn.error("send", "outbox: message on %s refused by the client: %s", row.topic, exc)
                self._cursor = max(self._cursor, row.id)
                self._forget(row.id, len(row.payload), in_memory)
                continue
            if info is None:
                return  # client queue full or not connected after all: retry next turn
            self._cursor = max(self._cursor, row.id)
            self._inflight[info.mid] = _Inflight(row.id, info, len(row.payload), row.created, in_memory)
            self._inflight_ids.add(row.id)

    def _fetch(self, limit: int) -> List[Tuple[Row, bool]]:
        """Rows after the cursor in id order, from the store and the memory queue merged."""
        out: List[Tuple[Row, bool]] = []
        if self._db is not None:
            try:
                cur = self._db.execute(
                    "SELECT id, created, topic, qos, retain, payload FROM outbox"
                    " WHERE id > ? ORDER BY id LIMIT ?",
                    (self._cursor, limit),
                )
                for i, created, topic, qos, retain, payload in cur:
                    if i in self._db_deletes:
                        continue
                    out.append(
                        (
                            Row(int(i), float(created), str(topic), int(qos), bool(retain), bytes(payload)),
                            False,
                        )
                    )
            except sqlite3.Error as exc:
                self._warn.error("read", "outbox %s: cannot read: %s", self.path, exc)
        if self._mem:
            mem = [(r, True) for i, r in self._mem.items() if i > self._cursor]
            out = sorted(out + mem[:limit], key=lambda x: x[0].id)
        return out[:limit]
