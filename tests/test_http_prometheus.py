"""A real Prometheus server scrapes the real daemon (subprocess, demo clip, real mosquitto)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, free_port
from tests.support.daemon_harness import RunningDaemon, daemon_config
from tests.support.prometheus import Prometheus, prometheus_exe
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_prometheus_scrapes_the_daemon_and_sees_frames_rise(tmp_path: Path, mosquitto: Mosquitto) -> None:
    if prometheus_exe() is None:
        pytest.skip("prometheus is not installed (.ci/run installs it with apt)")
    port = free_port()
    daemon = RunningDaemon(
        tmp_path, mosquitto, daemon_config(tmp_path, mosquitto, http={"listen": f"127.0.0.1:{port}"})
    )
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"], interval_s=1.0)
    try:
        daemon.wait_ready()
        prom.start()

        def target_up() -> bool:
            targets = prom.api("targets")["activeTargets"]
            return any(t["health"] == "up" and t["scrapeUrl"].endswith(f":{port}/metrics") for t in targets)

        wait_for(target_up, 60, "Prometheus to report the edgedet target up")
        assert prom.query('up{job="edgedet"}') == {f"instance=127.0.0.1:{port},job=edgedet": 1.0}

        frames = 'edgedet_camera_frames_processed_total{camera="front"}'
        first = wait_for(lambda: prom.query(frames), 30, "a first frame count in Prometheus")
        start = next(iter(first.values()))
        wait_for(
            lambda: next(iter(prom.query(frames).values()), 0.0) > start, 30, "the frame counter to rise"
        )
        rate = prom.query(f"rate({frames}[5s])")
        assert rate and next(iter(rate.values())) > 0

        connected = prom.query("edgedet_mqtt_connected")
        assert list(connected.values()) == [1.0]
        info = prom.query("edgedet_build_info")
        (labels,) = info
        assert "backend=onnxruntime" in labels and "precision=fp32" in labels
        p50 = prom.query(
            'histogram_quantile(0.5, rate(edgedet_stage_latency_seconds_bucket{stage="inference"}[10s]))'
        )
        assert p50 and next(iter(p50.values())) > 0
    finally:
        prom.stop()
        daemon.stop()
