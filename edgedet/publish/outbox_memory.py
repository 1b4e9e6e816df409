"""The outbox's memory fallback: durable messages that could not be committed (unwritable folder, full
disk) wait here, bounded by count and bytes, until the store works again or the broker acknowledges
them. Only the outbox's writer thread uses it."""

from __future__ import annotations

import collections
from typing import Collection, Iterable, List, Optional

from edgedet.publish.outbox_store import DROPPED, MEMORY, Row


class MemoryQueue:
    def __init__(self, max_messages: int, max_bytes: int, drop_new: bool) -> None:
        self._rows: collections.OrderedDict[int, Row] = collections.OrderedDict()
        self.bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._drop_new = drop_new

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._rows

    def oldest_created(self) -> Optional[float]:
        """Creation time of the oldest row held (rows are kept in id order, so the first)."""
        return next(iter(self._rows.values())).created if self._rows else None

    def rows(self) -> List[Row]:
        return list(self._rows.values())

    def _full(self, size: int) -> bool:
        return len(self._rows) >= self._max_messages or self.bytes + size > self._max_bytes

    def add(self, row: Row, inflight: Collection[int]) -> int:
        """Keep ``row`` (state MEMORY) or refuse it (state DROPPED); with drop_oldest, older rows not in
        flight make room first. Returns how many older rows were dropped."""
        size = len(row.payload)
        dropped = 0
        while self._rows and self._full(size) and not self._drop_new:
            victim = next((i for i in self._rows if i not in inflight), None)
            if victim is None:
                break
            self.pop(victim)
            dropped += 1
        if self._full(size):
            row.state = DROPPED
            return dropped
        self._rows[row.id] = row
        self.bytes += size
        row.state = MEMORY
        return dropped

    def pop(self, row_id: int) -> Optional[Row]:
        row = self._rows.pop(row_id, None)
        if row is not None:
            self.bytes -= len(row.payload)
        return row

    def after(self, cursor: int, skip: Collection[int], limit: int) -> List[Row]:
        """Rows with id > ``cursor`` not in ``skip``, in id order, at most ``limit``."""
        out: List[Row] = []
        for i, row in self._rows.items():
            if i > cursor and i not in skip:
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    def reindex(self, rows: Iterable[Row]) -> None:
        """The same rows under new ids (see Outbox._renumber)."""
        self._rows = collections.OrderedDict((r.id, r) for r in rows)
