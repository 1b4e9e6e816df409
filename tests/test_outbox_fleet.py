"""The fleet simulation, small: device processes with their own outboxes, a broker restart, a shared
subscription group de-duplicating by id; nothing the devices accepted is lost (the benchmark runs 100+)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from edgedet.devtools.fleet import run_fleet


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (.ci/run installs it with apt)",
)
def test_fleet_with_a_broker_restart_loses_nothing_and_shares_the_work() -> None:
    out = io.StringIO()
    res = run_fleet(devices=6, processes=2, seconds=8.0, rate=3.0, consumers=3, down_s=1.5, out=out)
    # what the broker discarded after its restart (it forgets shared subscriptions until the consumers
    # subscribe again, and says so in the PUBACK) is sent again by the devices (outbox.unrouted.retry)
    assert res.accepted > 0 and res.lost == res.discarded_by_broker == res.gaps == 0, out.getvalue()
    assert res.conflicts == 0 and res.left_in_outboxes == 0, out.getvalue()
    assert len(res.per_consumer) == 3  # the group shared the stream
