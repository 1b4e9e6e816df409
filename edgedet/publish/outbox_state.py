"""The outbox's shared state: what the caller-facing API (outbox.py) and the writer thread
(outbox_writer.py, outbox_commit.py) both see, the counters and the stats snapshot, and the values
that cross between them.

Locking: ``_lock`` guards what callers touch (the pending list, counters, the snapshot); everything
else here is the writer thread's own and published to the others by ``_publish_snapshot``.
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
from edgedet.publish.outbox_store import OutboxStore, Row
from edgedet.runtime.ratelimit import RateLimitedLog

# one logger for the whole outbox, whichever of its modules logs (users filter on this name)
log = logging.getLogger("edgedet.publish.outbox")

# how often the age of the oldest waiting message is read again (one indexed row from the file)
OLDEST_REFRESH_S = 1.0
# what a PUBACK/PUBCOMP said
ACK_OK, ACK_FAILED, ACK_NO_SUBSCRIBERS = "ok", "failed", "no_subscribers"


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
class Inflight:
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


COUNTERS = (
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


class OutboxState:
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
        self._inflight: Dict[int, Inflight] = {}  # mid -> entry
        self._inflight_ids: Set[int] = set()
        self._recheck: List[Tuple[int, str, float]] = []
        self._cursor = 0  # highest row id handed to the client in this process
        self._sent_top = 0  # highest row id ever handed out (above the cursor after a rewind)
        # unrouted.retry: lowest row id the broker discarded for lack of subscribers, and when it and
        # everything behind it may go out again (nothing is sent meanwhile: order holds)
        self._unrouted_from: Optional[int] = None
        self._unrouted_at = 0.0
        # after an unrouted wait the first message goes alone, and the ones behind it only once a
        # subscriber took it: otherwise a subscriber arriving mid-window gets them out of order
        self._unrouted_probe = False
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
        self._counters = dict.fromkeys(COUNTERS, 0)

    @property
    def epoch(self) -> str:
        return self.numbering.epoch

    @property
    def _store_ok(self) -> bool:
        return self._store is not None and self._store.is_open

    def _limits(self) -> str:
        return f"max_messages={self._cfg.max_messages}, max_bytes={self._cfg.max_bytes}"

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
