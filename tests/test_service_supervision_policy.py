"""The supervisor's capture-restart policy, as a pure function (the daemon tests reach it only slowly)."""

from __future__ import annotations

import pytest

from edgedet.service.daemon import MAX_CAPTURE_RESTARTS, capture_may_restart
from edgedet.sources.capture import CaptureState


@pytest.mark.parametrize("state", [s for s in CaptureState if s is not CaptureState.FAILED])
def test_a_crashed_capture_thread_is_restarted_until_the_limit(state: CaptureState) -> None:
    assert all(capture_may_restart(state, n) for n in range(MAX_CAPTURE_RESTARTS))
    assert not capture_may_restart(state, MAX_CAPTURE_RESTARTS)


def test_an_unusable_source_is_never_restarted() -> None:
    assert not capture_may_restart(CaptureState.FAILED, 0)


def test_the_limit_is_a_parameter() -> None:
    assert capture_may_restart(CaptureState.STREAMING, 1, limit=2)
    assert not capture_may_restart(CaptureState.STREAMING, 2, limit=2)
