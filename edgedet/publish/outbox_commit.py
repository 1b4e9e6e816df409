"""The outbox writer's commits: group commit of pending rows with the bounds and the deletes of
acknowledged rows in one transaction, opening and re-opening the store, and the degraded mode (a
corrupt file moved aside, an unwritable store or a full disk: rows kept in memory, a new epoch,
written back when the store works again). Runs on the writer thread only (outbox_writer.py).
"""

from __future__ import annotations

import collections
import sqlite3
import time
from typing import Counter, Dict, List, Optional, Tuple

from edgedet.publish.outbox_state import OutboxState, log
from edgedet.publish.outbox_store import COMMITTED, DROPPED, Loaded, OutboxStore, Row, is_corruption

# acknowledged rows are deleted with the next insert, or after this long at the latest
DELETE_DELAY_S = 0.25
# acknowledged rows deleted per commit while the store is degraded (a full disk)
DELETE_CHUNK = 64


class OutboxCommits(OutboxState):
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
