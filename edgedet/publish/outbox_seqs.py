"""The outbox's numbering: per-stream sequence numbers, their epoch, and what of them to persist with
each commit so that no number is ever reused under one epoch.

- Durable streams persist exactly the highest seq committed (a crash reuses only numbers that no
  committed message carries, and so nothing sent ever shows a gap).
- Non-durable streams numbered by this process reserve blocks of ``SEQ_RESERVE`` ahead (their
  messages are sent before anything is committed; a crash then skips ahead, never back).
- An epoch the file knows must not get numbers the file does not: when a commit fails, or the file
  turns out corrupt, numbering starts over under a new epoch, and messages not yet sent are
  re-stamped into it; the next commit that works writes the new epoch with its numbers.

Thread-safe; the outbox calls ``restamp``/``start_epoch`` under its own lock (that order only).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Dict, Iterable, List, Set, Tuple

from edgedet.publish.messages import encode
from edgedet.publish.outbox_store import Loaded, Row

SEQ_RESERVE = 1000


def new_epoch() -> str:
    return uuid.uuid4().hex[:12]


def restamped(payload: bytes, epoch: str, seq: int) -> bytes:
    """The same JSON message under a new epoch/seq (it was never sent under the old ones)."""
    msg = json.loads(payload)
    msg["epoch"], msg["seq"] = epoch, seq
    return encode(msg)


class Numbering:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch = new_epoch()
        self.in_file = False  # the store holds this epoch: a failed commit must start a new one
        self._seqs: Dict[str, int] = {}  # last number given out per stream
        self._persisted: Dict[str, int] = {}  # last number written to the store per stream
        # non-durable streams numbered by this process: only these need blocks reserved ahead (a stream
        # loaded from the file and not used yet is at its persisted value; reserving for it would
        # persist a jump of SEQ_RESERVE into a durable stream: a gap after the next crash)
        self._reserved: Set[str] = set()
        self._handled: Dict[str, int] = {}  # highest seq the writer stored (file or memory) this epoch

    def load(self, loaded: Loaded, first: bool) -> None:
        """Take over the file's epoch and numbers at start; on a re-open keep this process's own."""
        with self._lock:
            if first and loaded.epoch is not None:
                self.epoch, self.in_file = loaded.epoch, True
                self._seqs.update(loaded.seqs)
                self._persisted = dict(loaded.seqs)
            elif loaded.epoch is not None and loaded.epoch == self.epoch:
                self.in_file = True
                for k, v in loaded.seqs.items():
                    self._seqs[k] = max(self._seqs.get(k, 0), v)
                self._persisted = dict(loaded.seqs)
            else:  # a new file, or another numbering: the next commit writes ours
                self.in_file = False
                self._persisted = {}

    def next(self, stream: str, durable: bool) -> Tuple[int, str, bool]:
        """(seq, epoch, whether the writer should reserve the next block now)."""
        with self._lock:
            seq = self._seqs.get(stream, 0) + 1
            self._seqs[stream] = seq
            if not durable:
                self._reserved.add(stream)
            low = not durable and seq > self._persisted.get(stream, 0) - SEQ_RESERVE // 2
            return seq, self.epoch, low

    def last(self, stream: str) -> int:
        with self._lock:
            return self._seqs.get(stream, 0)

    def restamp(self, row: Row) -> None:
        """A row numbered under an older epoch gets the next number of the current one."""
        with self._lock:
            self._restamp_locked(row)

    def _restamp_locked(self, row: Row) -> None:
        if not (row.stream and row.epoch and row.epoch != self.epoch):
            return
        seq = self._seqs.get(row.stream, 0) + 1
        self._seqs[row.stream] = seq
        row.payload = restamped(row.payload, self.epoch, seq)
        row.seq, row.epoch = seq, self.epoch

    def start_epoch(self, unsent: Iterable[Row]) -> str:
        """A new epoch; ``unsent`` rows (in id order) are re-stamped into it. Returns the old one."""
        with self._lock:
            old, self.epoch = self.epoch, new_epoch()
            self.in_file = False
            self._seqs.clear()
            self._persisted.clear()
            self._handled.clear()
            for row in unsent:
                self._restamp_locked(row)
            return old

    def handled(self, rows: Iterable[Row]) -> None:
        """The writer stored these rows (in the file or in memory)."""
        with self._lock:
            for row in rows:
                if row.stream and row.epoch == self.epoch and row.seq > self._handled.get(row.stream, 0):
                    self._handled[row.stream] = row.seq

    def to_persist(self, rows: List[Row], closing: bool) -> Tuple[bool, List[Tuple[str, int]]]:
        """(whether the commit must write the epoch, the seqs it writes): exact for durable streams,
        blocks ahead for the others; with a new epoch every stream stored in it so far."""
        with self._lock:
            new_epoch_ = not self.in_file
            out: Dict[str, int] = dict(self._handled) if new_epoch_ else {}
            for row in rows:
                if row.stream and row.epoch in ("", self.epoch) and row.seq > out.get(row.stream, 0):
                    out[row.stream] = row.seq
            for stream, value in self._seqs.items():
                persisted = self._persisted.get(stream, 0)
                if closing and not new_epoch_:
                    if value != persisted:
                        out[stream] = value  # a clean stop: exact, no jump at the next start
                elif stream in self._reserved and (new_epoch_ or value > persisted - SEQ_RESERVE // 2):
                    out[stream] = value + SEQ_RESERVE
            if new_epoch_ or closing:
                return new_epoch_, list(out.items())
            return False, [(s, v) for s, v in out.items() if v > self._persisted.get(s, 0)]

    def committed(self, new_epoch_: bool, seqs: List[Tuple[str, int]]) -> None:
        with self._lock:
            self.in_file = True
            if new_epoch_:
                self._persisted = {}
            for s, v in seqs:
                self._persisted[s] = v
