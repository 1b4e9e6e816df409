"""The outbox's SQLite file: schema, statements, the epoch and the persisted sequence numbers.

Only SQL lives here; what to write when, and what to do when it fails, is the writer's business
(outbox_commit.py). Every method raises ``sqlite3.Error`` (or ``OSError`` on opening) for the caller to
classify with ``is_corruption``. Not thread-safe: the outbox's writer thread is its only user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, created REAL NOT NULL, topic TEXT NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS seqs(stream TEXT PRIMARY KEY, last INTEGER NOT NULL)",
)

# checkpoint the WAL into the file every this many pages (SQLite's default is 1,000 = 4 MiB): a WAL
# holds space that only a checkpoint gives back, and on a nearly full disk a checkpoint must fit too
WAL_CHECKPOINT_PAGES = 256
# a file of this size beside the store, given back when the disk is full: room for the checkpoint
# and the deletes that free the store again (a full disk otherwise keeps a full WAL for ever)
RESERVE_BYTES = 3 * WAL_CHECKPOINT_PAGES * 4096 // 2

# Row.state: what the writer did with a row (put() waits until it is no longer PENDING)
PENDING, COMMITTED, MEMORY, DROPPED = "pending", "committed", "memory", "dropped"


@dataclass
class Row:
    """One durable message. ``stream``/``seq``/``epoch`` are its envelope's numbering (empty for rows
    read back from the file, whose payload already carries them)."""

    id: int
    created: float
    topic: str
    qos: int
    retain: bool
    payload: bytes
    stream: str = ""
    seq: int = 0
    epoch: str = ""
    state: str = PENDING


@dataclass(frozen=True)
class Loaded:
    """What an opened file holds: its epoch (None: a new file), persisted seqs, depth and top id."""

    epoch: Optional[str]
    seqs: Dict[str, int]
    count: int
    nbytes: int
    top: int


def is_corruption(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class OutboxStore:
    def __init__(self, path: Path, synchronous: str = "full", max_page_count: Optional[int] = None) -> None:
        """``max_page_count`` caps the file (pages of 4 KiB), for testing a full disk."""
        self.path = path
        self._synchronous = synchronous
        self._max_page_count = max_page_count
        self._db: Optional[sqlite3.Connection] = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def open(self) -> Loaded:
        """Connect (WAL, synchronous, quick_check, schema) and read what the file holds."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("outbox %s: journal_mode is %s, not WAL (no WAL support here?)", self.path, mode)
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            if self._max_page_count is not None:
                db.execute(f"PRAGMA max_page_count={int(self._max_page_count)}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {check})")
            for stmt in _SCHEMA:
                db.execute(stmt)
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            seqs = {str(k): int(v) for k, v in db.execute("SELECT stream, last FROM seqs")}
            count, size, top = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MAX(id), 0) FROM outbox"
            ).fetchone()
        except BaseException:
            db.close()
            raise
        self._db = db
        return Loaded(None if row is None else str(row[0]), seqs, int(count), int(size), int(top))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("outbox store is not open")
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One group commit: everything inside is one fsync, or nothing on an exception."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    # -- statements (inside transaction()) ----------------------------------------------------
    def set_epoch(self, epoch: str) -> None:
        """A new numbering: the epoch and only its sequence numbers (the old ones are dropped)."""
        db = self._conn()
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('epoch', ?)", (epoch,))
        db.execute("DELETE FROM seqs")

    def insert(self, rows: Sequence[Row]) -> None:
        if rows:
            self._conn().executemany(
                "INSERT INTO outbox(id, created, topic, qos, retain, payload) VALUES(?,?,?,?,?,?)",
                [(r.id, r.created, r.topic, r.qos, int(r.retain), r.payload) for r in rows],
            )

    def delete(self, ids: Iterable[int]) -> None:
        batch = [(i,) for i in ids]
        if batch:
            self._conn().executemany("DELETE FROM outbox WHERE id=?", batch)

    def set_seqs(self, seqs: Sequence[Tuple[str, int]]) -> None:
        if seqs:
            self._conn().executemany("INSERT OR REPLACE INTO seqs(stream, last) VALUES(?,?)", seqs)

    def older_than(self, cutoff: float, limit: int = 10_000) -> List[Tuple[int, int]]:
        """(id, payload size) of rows created before ``cutoff``."""
        cur = self._conn().execute(
            "SELECT id, LENGTH(payload) FROM outbox WHERE created < ? ORDER BY id LIMIT ?", (cutoff, limit)
        )
        return [(int(i), int(s)) for i, s in cur]

    def oldest(self, limit: int) -> List[Tuple[int, int]]:
        cur = self._conn().execute("SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [(int(i), int(s)) for i, s in cur]

    def oldest_created(self, skip: Collection[int]) -> Optional[float]:
        """Creation time of the row with the lowest id not in ``skip`` (acknowledged, delete pending)."""
        cur = self._conn().execute("SELECT id, created FROM outbox ORDER BY id LIMIT ?", (len(skip) + 1,))
        return next((float(created) for i, created in cur if int(i) not in skip), None)

    # -- reading -------------------------------------------------------------------------------
    def fetch(self, after: int, limit: int) -> List[Row]:
        """Rows with id > ``after`` in id order."""
        cur = self._conn().execute(
            "SELECT id, created, topic, qos, retain, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [
            Row(int(i), float(created), str(topic), int(qos), bool(retain), bytes(payload), state=COMMITTED)
            for i, created, topic, qos, retain, payload in cur
        ]

    @property
    def _reserve(self) -> Path:
        return Path(str(self.path) + "-reserve")

    def make_reserve(self) -> None:
        """Best effort: set RESERVE_BYTES of disk aside (no error if there is no room for it now)."""
        if self._reserve.exists():
            return
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < RESERVE_BYTES * 5 // 4:
                return  # never the reserve that fills the disk
        except OSError:
            return
        try:
            with open(self._reserve, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):
                self._reserve.unlink()

    def release_reserve(self) -> bool:
        """Give the reserve back to the file system; True if there was one."""
        try:
            self._reserve.unlink()
        except OSError:
            return False
        return True

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it: on a full disk the WAL (which only shrinks at a
        checkpoint, every 1,000 pages) holds the space that the next commits need."""
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            db.close()
        except sqlite3.Error as exc:
            log.warning("outbox %s: close failed: %s", self.path, exc)

    def drop(self) -> None:
        """Forget the connection without touching the file (it is corrupt)."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def move_aside(self, exc: BaseException) -> Optional[Path]:
        """Rename a corrupt file (and its -wal/-shm) to ``<name>.corrupt-<UTC>``; None if that fails."""
        self.drop()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{utc_stamp()}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
        except OSError as err:
            log.error("outbox %s is corrupt (%s) and cannot be moved aside: %s", self.path, exc, err)
            return None
        return aside
