"""A latest-item slot: the producer never waits, an unread item is replaced and counted as dropped.

This is what keeps capture independent of inference: latency stays bounded because an old frame is
replaced, not queued.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(
        self,
        on_drop: Optional[Callable[[T], None]] = None,
        on_put: Optional[Callable[[], None]] = None,
    ) -> None:
        self._item: Optional[T] = None
        self._cond = threading.Condition()
        self._on_drop = on_drop
        # lets one consumer wait on several slots at once (the inference worker serves every camera)
        self._on_put = on_put
        self.dropped = 0
        self.put_count = 0
        # when the consumer expects to be free again (monotonic); lets a non-live producer (a file
        # played as fast as possible) prepare its next item just in time instead of early
        self.busy_until = 0.0

    def put(self, item: T) -> None:
        with self._cond:
            old, self._item = self._item, item
            self.put_count += 1
            if old is not None:
                self.dropped += 1
            self._cond.notify_all()
        if old is not None and self._on_drop is not None:
            self._on_drop(old)  # e.g. hand a preprocessing buffer back to its pool
        if self._on_put is not None:
            self._on_put()

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """Remove and return the item, waiting up to ``timeout`` seconds; None if nothing came."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()  # a producer may wait for the slot to be empty
            return item

    def take_nowait(self) -> Optional[T]:
        with self._cond:
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the consumer has taken the item (True) or ``timeout`` passed (False)."""
        with self._cond:
            if self._item is not None:
                self._cond.wait_for(lambda: self._item is None, timeout)
            return self._item is None

    def __len__(self) -> int:
        return 0 if self._item is None else 1
