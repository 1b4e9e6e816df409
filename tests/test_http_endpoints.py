"""The daemon's HTTP endpoints over real sockets, with the real daemon on the bundled demo clip."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.commands.status import format_status
from edgedet.config import Config, parse_config, parse_listen
from edgedet.errors import ConfigError
from edgedet.service import metrics
from edgedet.service.daemon import Daemon
from edgedet.service.http import Endpoints, HttpServer
from edgedet.service.metrics import SnapshotCollector, dpkg_version, l4t_release
from edgedet.service.observe import DaemonView, Observability, readiness
from edgedet.service.status import TelemetryStatus
from edgedet.telemetry.reading import reading_from_tegrastats
from edgedet.telemetry.tegrastats_parse import parse_tegrastats
from tests.conftest import REPO
from tests.support.waiting import wait_for


def demo_config(tmp: Path, listen: str = "127.0.0.1:0", enabled: bool = True) -> Config:
    text = f"""
version: 1
device_id: http-test
state_dir: {tmp / "state"}
model: {{path: {DEMO_MODEL}}}
backend: {{type: onnxruntime, threads: 1}}
cameras:
  - name: demo
    source: {{type: file, path: {DEMO_CLIP}, loop: true, pace: realtime}}
    max_fps: 4
mqtt: {{enabled: false}}
telemetry: {{type: none}}
http: {{listen: "{listen}", enabled: {str(enabled).lower()}}}
tracking:
  cameras:
    demo:
      zones: [{{name: street, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}}]
      lines: [{{name: middle, points: [[0, 0.5], [1, 0.5]]}}]
"""
    return parse_config(text)


def get(url: str) -> Tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(demo_config(tmp_path_factory.mktemp("http")))
    d.start()
    try:
        # the supervisor's loop, by hand: one pass builds the snapshot the endpoints read
        wait_for(
            lambda: d.supervise_once() is None and d.status.cameras[0].frames_processed >= 3, 30, "frames"
        )
        yield d
    finally:
        d.stop()


def url_of(d: Daemon) -> str:
    assert d.observability.http is not None, "the HTTP server did not start"
    return d.observability.http.url


def metric_samples(text: str) -> Dict[str, Dict[Tuple[Tuple[str, str], ...], float]]:
    out: Dict[str, Dict[Tuple[Tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_exposition_parses_and_counts_the_cameras_frames(daemon: Daemon) -> None:
    code, ctype, text = get(url_of(daemon) + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    samples = metric_samples(text)
    assert samples["edgedet_camera_frames_in_total"][(("camera", "demo"),)] >= 3
    assert samples["edgedet_camera_up"][(("camera", "demo"),)] == 1.0
    (labels,) = samples["edgedet_build_info"]
    info = dict(labels)
    assert info["backend"] == "onnxruntime" and info["precision"] == "fp32" and info["version"]
    # histogram buckets are cumulative and end in the count
    buckets = {
        float(dict(k)["le"]): v
        for k, v in samples["edgedet_stage_latency_seconds_bucket"].items()
        if dict(k)["stage"] == "inference"
    }
    counts = [buckets[le] for le in sorted(buckets)]
    assert counts == sorted(counts) and counts[-1] >= 3
    assert counts[-1] == samples["edgedet_stage_latency_seconds_count"][(("stage", "inference"),)]
    inference = samples["edgedet_inference_seconds_count"]
    assert inference[(("backend", "onnxruntime"), ("precision", "fp32"))] >= 3


def test_frame_counter_rises_between_scrapes(daemon: Daemon) -> None:
    def frames() -> float:
        text = get(url_of(daemon) + "/metrics")[2]
        return metric_samples(text)["edgedet_camera_frames_processed_total"][(("camera", "demo"),)]

    first = frames()
    wait_for(lambda: daemon.supervise_once() is None and frames() > first, 20, "the frame counter to rise")


def test_healthz_and_readyz_say_why(daemon: Daemon) -> None:
    code, _, body = get(url_of(daemon) + "/healthz")
    assert (code, body.strip()) == (200, "ok")
    code, _, body = get(url_of(daemon) + "/readyz")
    assert code == 200 and body.startswith("ready: 1/1 cameras up (demo)")


def test_readyz_is_not_ready_without_a_streaming_camera(daemon: Daemon) -> None:
    snap = daemon.status
    down = dataclasses.replace(snap.cameras[0], state="down", down_reason="no frame for 10 s")
    ok, reason = readiness(dataclasses.replace(snap, cameras=(down,)))
    assert not ok and "no camera streaming (demo down (no frame for 10 s))" in reason
    assert readiness(None) == (False, "not ready: starting (loading the model)")
    assert readiness(dataclasses.replace(snap, phase="reloading")) == (False, "not ready: reloading")


def test_status_is_the_snapshot_as_json(daemon: Daemon) -> None:
    code, ctype, body = get(url_of(daemon) + "/status")
    doc = json.loads(body)
    assert code == 200 and ctype.startswith("application/json")
    assert set(doc) == {f.name for f in dataclasses.fields(daemon.status)}
    assert doc["cameras"][0]["name"] == "demo" and doc["model"]["backend"] == "onnxruntime"


def test_edgedet_status_prints_the_snapshot_as_a_table(daemon: Daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgedet", "status", "--url", url_of(daemon)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("edgedet running, up ")
    header = next(i for i, line in enumerate(lines) if line.startswith("camera "))
    assert lines[header + 1].split()[:2] == ["demo", "up"]
    assert any(line.startswith("inference ") for line in lines)
    assert "MQTT: disabled" in lines


def test_edgedet_status_names_the_address_it_cannot_reach() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        proc = subprocess.run(
            [sys.executable, "-m", "edgedet", "status", "--url", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(REPO),
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"edgedet: error: cannot reach edgedet at http://127.0.0.1:{port}/status")
    assert format_status({"phase": "starting"}) == "edgedet: starting"


def endpoints(health: Tuple[bool, str] = (True, "ok")) -> Endpoints:
    return Endpoints(
        health=lambda: health,
        ready=lambda: (False, "not ready: starting"),
        status=lambda: {"phase": "starting"},
        registry=CollectorRegistry(),
    )


def test_healthz_is_503_with_the_watchdogs_reason_when_a_stage_stalls() -> None:
    server = HttpServer(parse_listen("127.0.0.1:0"), endpoints((False, "inference stalled 20.0 s")))
    assert server.start()
    try:
        assert get(server.url + "/healthz")[::2] == (503, "inference stalled 20.0 s\n")
        assert get(server.url + "/readyz")[::2] == (503, "not ready: starting\n")
        assert get(server.url + "/nothing")[0] == 404
    finally:
        server.close()


def test_port_in_use_is_a_logged_error_and_the_daemon_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        caplog.set_level(logging.ERROR, logger="edgedet.service.http")
        d = Daemon(demo_config(tmp_path, listen=f"127.0.0.1:{port}"))
        d.start()
        try:
            assert d.observability.http is None
            assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
            wait_for(
                lambda: d.supervise_once() is None and d.status.cameras[0].frames_processed > 0, 30, "frames"
            )
        finally:
            d.stop()


def test_a_restarted_server_binds_again_while_old_connections_linger() -> None:
    first = HttpServer(parse_listen("127.0.0.1:0"), endpoints())
    assert first.start()
    port = first.port
    assert get(first.url + "/healthz")[0] == 200  # the server closes first: its side lingers in TIME_WAIT
    first.close()
    again = HttpServer(parse_listen(f"127.0.0.1:{port}"), endpoints())
    try:
        assert again.start(), "a restarted daemon must not lose its endpoints to TIME_WAIT"
    finally:
        again.close()


def test_ipv6_loopback_listener_answers() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = HttpServer(parse_listen("[::1]:0"), endpoints())
    if not server.start():
        pytest.skip("::1 cannot be bound here")
    try:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/healthz")[0] == 200
    finally:
        server.close()


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:9464", "127.0.0.1", 9464), ("[::1]:9464", "::1", 9464), ("0.0.0.0:0", "0.0.0.0", 0)],
)
def test_listen_addresses_parse(text: str, host: str, port: int) -> None:
    address = parse_listen(text)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("localhost:9464", "is not an IP address"),
        ("::1:9464", "in brackets"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:99999", "port must be a number from 0 to 65535"),
        ("[::1]9464", "needs the form [addr]:port"),
    ],
)
def test_bad_listen_address_is_a_config_error_with_its_line(
    tmp_path: Path, listen: str, message: str
) -> None:
    camera = "{name: a, source: {type: file, path: x.mp4}}"
    text = f"model: {{path: m.onnx}}\ncameras: [{camera}]\nhttp:\n  listen: '{listen}'\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="c.yaml")
    assert any(p.startswith("c.yaml:4: http.listen:") and message in p for p in err.value.problems)


def test_a_reload_moves_the_listener_and_can_turn_it_off(tmp_path: Path) -> None:

    obs = Observability(DaemonView(lambda: None, lambda: (True, "ok"), lambda: None, lambda: None))
    obs.start(demo_config(tmp_path))
    try:
        assert obs.http is not None
        old_url = obs.http.url
        assert get(old_url + "/readyz")[::2] == (503, "not ready: starting (loading the model)\n")
        assert get(old_url + "/healthz")[::2] == (200, "starting: loading the model\n")
        assert json.loads(get(old_url + "/status")[2]) == {"phase": "starting"}
        obs.reconfigure(demo_config(tmp_path, listen="127.0.0.2:0"), None)
        assert obs.http is not None and obs.http.url.startswith("http://127.0.0.2:")
        assert get(obs.http.url + "/healthz")[0] == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(old_url + "/healthz", timeout=5)
        obs.reconfigure(demo_config(tmp_path, enabled=False), None)
        assert obs.http is None
    finally:
        obs.stop()


ORIN_LINE_ROW = 11  # tests/data/tegrastats/lines.tsv: a real AGX Orin line (JetPack 6)


def test_telemetry_metrics_come_from_a_real_tegrastats_reading(daemon: Daemon) -> None:

    row = (REPO / "tests" / "data" / "tegrastats" / "lines.tsv").read_text().splitlines()[ORIN_LINE_ROW]
    reading = reading_from_tegrastats(parse_tegrastats(row.split("\t")[3]))
    sensor, hottest = reading.max_temperature()
    telemetry = TelemetryStatus(
        "tegrastats", reading.total_power_mw, "sum", hottest, sensor, 40.0, None, None
    )
    snap = dataclasses.replace(daemon.status, telemetry=telemetry)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, lambda: reading))

    samples = metric_samples(generate_latest(registry).decode())
    temps = {dict(k)["sensor"]: v for k, v in samples["edgedet_temperature_celsius"].items()}
    assert temps == {k: v for k, v in reading.temperatures.items() if v is not None} and temps
    rails = {dict(k)["rail"]: v for k, v in samples["edgedet_power_rail_watts"].items()}
    assert (
        rails == {k: cur / 1000.0 for k, (cur, _) in reading.power_rails.items() if cur is not None} and rails
    )
    assert samples["edgedet_gpu_load_ratio"][()] == 0.4
    assert samples["edgedet_temperature_max_celsius"][()] == hottest


def test_platform_versions_are_read_from_real_file_formats() -> None:

    release = (
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1"
    )
    assert l4t_release(release) == "R35.4.1"
    assert l4t_release("garbage") is None
    status = (
        "Package: nvidia-jetpack-core\nStatus: install ok installed\nVersion: 5.1.2-b104\n\n"
        "Package: nvidia-jetpack\nStatus: deinstall ok config-files\nVersion: 5.1.1-b56\n\n"
    )
    assert dpkg_version(status, "nvidia-jetpack-core") == "5.1.2-b104"
    assert dpkg_version(status, "nvidia-jetpack") is None  # removed: not what runs


def test_a_failed_http_server_is_started_again_by_the_supervisor(tmp_path: Path) -> None:
    obs = Observability(DaemonView(lambda: None, lambda: (True, "ok"), lambda: None, lambda: None))
    obs.start(demo_config(tmp_path))
    try:
        first = obs.http
        assert first is not None
        first.failure = OSError("select failed")  # what Worker records when step() raised
        obs.tick()
        assert obs.http is not None and obs.http is not first and obs.http.failure is None
        assert get(obs.http.url + "/healthz")[0] == 200
    finally:
        obs.stop()


def test_platform_files_are_read_once_not_at_every_scrape(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status"
    status.write_text("Package: nvidia-jetpack\nStatus: install ok installed\nVersion: 6.2+b77\n\n")
    monkeypatch.setattr(metrics, "_DPKG_STATUS", status)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: daemon.status, lambda: None))

    def jetpack() -> str:
        (labels,) = metric_samples(generate_latest(registry).decode())["edgedet_build_info"]
        return dict(labels)["jetpack"]

    assert jetpack() == "6.2+b77"
    status.unlink()  # a multi-megabyte file on a Jetson: reading it per scrape cost 12 ms of CPU
    assert jetpack() == "6.2+b77"


def test_tracks_zone_occupancy_and_line_counts_are_exported(daemon: Daemon) -> None:
    zone = (("camera", "demo"), ("zone", "street"))
    person = (("camera", "demo"), ("label", "person"), ("zone", "street"))

    def busy() -> Optional[Dict[str, Dict[Tuple[Tuple[str, str], ...], float]]]:
        daemon.supervise_once()
        s = metric_samples(get(url_of(daemon) + "/metrics")[2])
        tracked = s.get("edgedet_tracked_objects", {}).get((("camera", "demo"),), 0)
        in_zone = s.get("edgedet_zone_occupancy", {}).get(zone, 0)
        return s if tracked > 0 and in_zone > 0 else None

    # the street clip: people walk through the whole-frame zone
    s = wait_for(busy, 30, "tracked people in the zone")
    assert s["edgedet_zone_objects"][person] >= 1
    assert s["edgedet_zone_occupancy"][zone] == sum(
        v for k, v in s["edgedet_zone_objects"].items() if dict(k)["zone"] == "street"
    )
    text = get(url_of(daemon) + "/metrics")[2]
    assert "# TYPE edgedet_line_crossings_total counter" in text  # samples once someone crossed the line
    for labels in metric_samples(text).get("edgedet_line_crossings_total", {}):
        assert dict(labels)["line"] == "middle" and dict(labels)["direction"] in ("in", "out")
