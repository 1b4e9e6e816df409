"""The daemon end to end: a subprocess on the bundled clip (and on a real RTSP server), a real mosquitto,
a real subscriber validating every message against the JSON Schemas; and every bad input at start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.publish.schema import MessageValidator
from tests.conftest import REPO
from tests.support.broker import Mosquitto, free_port
from tests.support.daemon_harness import DEVICE, RunningDaemon, Subscriber, daemon_config
from tests.support.onnx_graphs import bad_layout_outputs, save_constant_model

pytestmark = [pytest.mark.timeout(240)]


def decoded(subscriber: Subscriber, suffix: str) -> List[Dict[str, Any]]:
    topic = f"edgedet/{DEVICE}/{suffix}"
    return [json.loads(p) for _, t, p, _ in list(subscriber.messages) if t == topic]


@pytest.mark.slow
def test_demo_clip_messages_follow_the_contract_and_sigterm_says_offline(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    config = daemon_config(tmp_path, mosquitto)
    config["cameras"][0]["max_fps"] = 5
    config["mqtt"]["events"] = {"min_frames": 2, "window_frames": 3, "clear_after_s": 1}
    d = RunningDaemon(tmp_path, mosquitto, config)
    try:
        d.wait_ready()
        subscriber.wait("front/detections", timeout=30)
        subscriber.wait("front/events", timeout=30)
        subscriber.wait("stats", timeout=30)
        assert subscriber.wait("status", timeout=10, contains=b"online") == b"online"
        stop_sent = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0, d.log_text()[-3000:]
        assert subscriber.wait("status", timeout=5, since=stop_sent, contains=b"offline") == b"offline"
    finally:
        d.stop()

    validator = MessageValidator()
    checked = 0
    for _, topic, payload, _ in list(subscriber.messages):
        if topic.endswith("/snapshot"):
            assert payload[:2] == b"\xff\xd8", topic  # binary JPEG (test_tracking_e2e decodes them)
            continue
        message: Any = payload.decode() if topic.endswith("/status") else json.loads(payload)
        assert validator.errors(message) == [], (topic, message)
        checked += 1
    detections = decoded(subscriber, "front/detections")
    assert checked >= len(detections) >= 5
    people = [b for m in detections for b in m["detections"] if b["class_name"] == "person"]
    assert people, "the street clip has pedestrians in every frame"
    for box in people:
        x1, y1, x2, y2 = box["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480  # source pixels of the 640x480 clip
    seqs = [m["seq"] for m in detections]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    events = decoded(subscriber, "front/events")
    assert any(e["event"] == "appeared" and e["class_name"] == "person" for e in events)


@pytest.mark.slow
def test_rtsp_camera_drop_and_return_without_daemon_restart(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber, video_1080p: Path
) -> None:
    from tests.support.rtsp_server import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = RtspServer(video_1080p, tmp_path / "rtsp").start()
    config = daemon_config(tmp_path, mosquitto)
    config["cameras"] = [
        {
            "name": "door",
            "source": {"type": "rtsp", "url": server.url, "decoder": "ffmpeg"},
            "max_fps": 4,
            "stall_timeout_s": 2,
            "reconnect": {"initial_s": 0.5, "max_s": 2},
        }
    ]
    d = RunningDaemon(tmp_path, mosquitto, config)
    try:
        d.wait_ready()
        subscriber.wait("door/detections", timeout=30)
        server.kill()
        killed = time.monotonic()
        # the daemon notices: its stats report the camera as not streaming, and it stays up
        deadline = time.monotonic() + 30
        while True:
            states = [m["cameras"]["door"]["state"] for m in decoded(subscriber, "stats")]
            if states and states[-1] != "streaming" and time.monotonic() - killed > 1:
                break
            assert time.monotonic() < deadline, f"camera never reported down: {states[-5:]}"
            assert d.proc.poll() is None, d.log_text()[-3000:]
            time.sleep(0.2)
        server.start()
        back = time.monotonic()
        subscriber.wait("door/detections", timeout=60, since=back)
        assert d.proc.poll() is None
        frame = json.loads(subscriber.wait("door/detections", timeout=10, since=back))
        assert (frame["source"]["width"], frame["source"]["height"]) == (1920, 1080)
    finally:
        d.stop()
        server.kill()


def run_cli(
    tmp_path: Path, config: Dict[str, Any], *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    path = tmp_path / "edgedet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "edgedet", "run", "--config", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(tmp_path),
    )


def base_config(tmp_path: Path, **changes: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "model": {"path": str(DEMO_MODEL)},
        "backend": {"type": "onnxruntime", "threads": 1},
        "state_dir": str(tmp_path / "state"),
        "cameras": [{"name": "cam", "source": {"type": "file", "path": str(DEMO_CLIP)}, "max_fps": 5}],
        "mqtt": {"enabled": False},
        "telemetry": {"type": "none"},
    }
    config.update(changes)
    return config


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgedet: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_missing_model_is_fatal_with_exit_78(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, base_config(tmp_path, model={"path": "nowhere/model.onnx"}))
    assert_one_line_error(proc, "model.path", "model.onnx", "no such file")
    assert proc.returncode == 78  # EX_CONFIG: the unit's RestartPreventExitStatus, no restart loop


def test_corrupt_model_is_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(os.urandom(4096))
    proc = run_cli(tmp_path, base_config(tmp_path, model={"path": str(bad)}))
    assert_one_line_error(proc, "corrupt.onnx")
    assert proc.returncode == 78


def test_model_whose_outputs_match_no_decoder_ends_startup_pointing_at_model_family(tmp_path: Path) -> None:
    model = save_constant_model(tmp_path / "classifier.onnx", bad_layout_outputs())
    proc = run_cli(tmp_path, base_config(tmp_path, model={"path": str(model)}))
    assert_one_line_error(proc, "match no decoder", "model.family")


def test_unreadable_video_file_is_fatal(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    cams = [{"name": "cam", "source": {"type": "file", "path": str(fake)}}]
    proc = run_cli(tmp_path, base_config(tmp_path, cameras=cams))
    assert_one_line_error(proc, "camera cam", "clip.mp4")
    assert proc.returncode == 78


def test_missing_video_file_is_fatal_before_the_model_loads(tmp_path: Path) -> None:
    cams = [{"name": "cam", "source": {"type": "file", "path": str(tmp_path / "gone.mp4")}}]
    proc = run_cli(tmp_path, base_config(tmp_path, cameras=cams))
    assert_one_line_error(proc, "cameras[cam].source.path", "gone.mp4", "no such file")
    assert "loaded" not in proc.stderr  # refused before the model was opened
    assert proc.returncode == 78


def test_missing_tls_files_are_fatal(tmp_path: Path) -> None:
    mqtt = {"host": "127.0.0.1", "port": free_port(), "tls": {"ca_file": str(tmp_path / "ca.pem")}}
    proc = run_cli(tmp_path, base_config(tmp_path, mqtt=mqtt))
    assert_one_line_error(proc, "mqtt.tls.ca_file", "ca.pem")
    assert proc.returncode == 78


def test_absent_usb_camera_is_a_warning_and_the_daemon_runs(tmp_path: Path) -> None:
    cams = [
        {
            "name": "usb",
            "source": {"type": "v4l2", "device": "/dev/video99"},
            "reconnect": {"initial_s": 0.5, "max_s": 1},
        }
    ]
    proc = run_cli(tmp_path, base_config(tmp_path, cameras=cams, stats={"interval_s": 1}), "--duration", "4")
    assert proc.returncode == 0, proc.stderr
    assert "cameras[usb].source.device: /dev/video99 does not exist (yet)" in proc.stderr
    assert "usb: reconnecting" in proc.stderr and "no such device" in proc.stderr


def test_rtsp_camera_that_never_answers_keeps_the_daemon_up(tmp_path: Path) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    cams = [
        {
            "name": "door",
            "source": {"type": "rtsp", "url": url, "decoder": "ffmpeg", "open_timeout_s": 2},
            "reconnect": {"initial_s": 0.5, "max_s": 1},
        }
    ]
    proc = run_cli(tmp_path, base_config(tmp_path, cameras=cams, stats={"interval_s": 1}), "--duration", "4")
    assert proc.returncode == 0, proc.stderr
    # the stats line shows the camera down with its reason and the next retry
    assert "door: reconnecting" in proc.stderr and "connection refused" in proc.stderr, proc.stderr
    assert "retry in" in proc.stderr


def test_one_dead_camera_does_not_stop_the_others(tmp_path: Path) -> None:
    cams = [
        {"name": "good", "source": {"type": "file", "path": str(DEMO_CLIP)}, "max_fps": 5},
        {"name": "dead", "source": {"type": "v4l2", "device": "/dev/video99"}},
    ]
    proc = run_cli(tmp_path, base_config(tmp_path, cameras=cams, stats={"interval_s": 1}), "--duration", "4")
    assert proc.returncode == 0, proc.stderr
    assert "capture-dead: camera /dev/video99: no such device" in proc.stderr
    assert "good: streaming" in proc.stderr


def test_broker_unreachable_keeps_running(tmp_path: Path) -> None:
    mqtt = {"host": "127.0.0.1", "port": free_port(), "reconnect_min_s": 0.5}
    proc = run_cli(tmp_path, base_config(tmp_path, mqtt=mqtt, stats={"interval_s": 1}), "--duration", "4")
    assert proc.returncode == 0, proc.stderr
    assert "broker unreachable" in proc.stderr
    assert "cam: streaming" in proc.stderr


def test_bad_credentials_keep_running(tmp_path: Path, mosquitto_factory: Any) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "right"], check=True)
    broker = mosquitto_factory(allow_anonymous=False, extra=[f"password_file {passwd}"]).start()
    mqtt = {"host": broker.host, "port": broker.port, "username": "edge", "reconnect_min_s": 0.5}
    env_password = {"EDGEDET_MQTT_PASSWORD": "wrong"}
    os.environ.update(env_password)
    try:
        proc = run_cli(tmp_path, base_config(tmp_path, mqtt=mqtt, stats={"interval_s": 1}), "--duration", "4")
    finally:
        os.environ.pop("EDGEDET_MQTT_PASSWORD", None)
    assert proc.returncode == 0, proc.stderr
    assert "not authori" in proc.stderr.lower() or "bad user name or password" in proc.stderr.lower(), (
        proc.stderr
    )
    assert "cam: streaming" in proc.stderr
