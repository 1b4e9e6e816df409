"""In-flight slot rotation for the pipelined GPU path (pure: no CUDA).

Each slot owns a stream, buffers and an execution context. Submissions take slots round-robin, and
results are collected in submission order, so consecutive frames overlap (upload of frame n+1 while
frame n executes) and come out in the order they went in. A slot is reused only after its previous
result was collected, which is what makes reusing its pinned buffers safe.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional

from edgedet.errors import BackendError


class SlotsFull(BackendError):
    """Every slot holds a result that was not collected yet."""


class SlotOrderError(BackendError):
    """A result was collected out of order, twice, or from another backend."""


@dataclass(frozen=True)
class SlotHandle:
    """What ``submit`` returns and ``collect`` takes."""

    slot: int
    ticket: int  # submission number, unique per ring
    batch: int
    owner: int = field(default=0, compare=False)  # id() of the ring, to catch a handle from elsewhere


class SlotRing:
    """``count`` slots used in rotation; thread-safe (one thread may submit while another collects)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one slot is needed")
        self.count = count
        self._next_slot = 0
        self._next_ticket = 0
        self._pending: Deque[SlotHandle] = deque()
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def oldest(self) -> Optional[SlotHandle]:
        with self._lock:
            return self._pending[0] if self._pending else None

    def acquire(self, batch: int, timeout: Optional[float] = 0.0) -> SlotHandle:
        """The next slot in rotation. If it still holds an uncollected result, wait up to ``timeout``
        seconds for another thread to collect it (0: don't wait), then raise SlotsFull."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        with self._lock:
            if len(self._pending) >= self.count and not self._freed.wait_for(
                lambda: len(self._pending) < self.count, timeout=timeout
            ):
                raise SlotsFull(
                    f"all {self.count} inference slots are in flight; collect the oldest result first"
                )
            handle = SlotHandle(self._next_slot, self._next_ticket, batch, id(self))
            self._next_slot = (self._next_slot + 1) % self.count
            self._next_ticket += 1
            self._pending.append(handle)
            return handle

    def cancel(self, handle: SlotHandle) -> None:
        """Undo the latest ``acquire`` (its submission failed before anything was queued on the GPU)."""
        with self._lock:
            if not self._pending or self._pending[-1] != handle:
                raise SlotOrderError("only the most recent submission can be cancelled")
            self._pending.pop()
            self._next_slot = (self._next_slot - 1) % self.count
            self._freed.notify_all()

    def check_next(self, handle: SlotHandle) -> None:
        """Raise SlotOrderError unless ``handle`` is the oldest result in flight."""
        with self._lock:
            self._check(handle)

    def _check(self, handle: SlotHandle) -> None:
        if handle.owner != id(self):
            raise SlotOrderError("this handle was not issued by this backend")
        if not self._pending or self._pending[0].ticket > handle.ticket:
            raise SlotOrderError(f"result {handle.ticket} was already collected")
        if self._pending[0] != handle:
            raise SlotOrderError(
                f"results must be collected in submission order: {self._pending[0].ticket} before "
                f"{handle.ticket}"
            )

    def release(self, handle: SlotHandle) -> None:
        """Mark the oldest result collected, freeing its slot."""
        with self._lock:
            self._check(handle)
            self._pending.popleft()
            self._freed.notify_all()
