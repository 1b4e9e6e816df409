"""A one-line progress display on stderr for long commands (eval, quantize, engine builds)."""

from __future__ import annotations

import sys
import time
from typing import Callable


def progress_printer(label: str, min_interval_s: float = 0.5) -> Callable[[int, int], None]:
    """Returns ``update(done, total)``; redraws at most every ``min_interval_s`` and on the last item."""
    last = [0.0]
    start = time.monotonic()
    interactive = sys.stderr.isatty()

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < min_interval_s:
            return
        last[0] = now
        elapsed = now - start
        eta = elapsed / done * (total - done) if done else 0.0
        line = f"{label}: {done}/{total} ({elapsed:.0f} s, about {eta:.0f} s left)"
        if interactive:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total or int(elapsed) % 10 == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return update
