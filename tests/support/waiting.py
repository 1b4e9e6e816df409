"""The one polling helper of the test suite: wait until something becomes true, or fail saying what."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; after ``timeout`` seconds
    raise AssertionError naming ``what`` (so a test fails with a reason, never hangs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
