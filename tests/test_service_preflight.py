"""`edgedet check-config` checks what the config points to (the same checks refuse a daemon start or a
reload): model, labels, file sources, TLS files, calibration/Q-DQ/FP16 models are errors when missing;
a /dev/video node that is absent is only a warning (the camera may be plugged in later)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.config import parse_config
from edgedet.service.preflight import ERROR, WARNING, check_references
from edgedet.sources.base import load_cv2, opencv_has_gstreamer
from tests.conftest import REPO


def _config(tmp_path: Path, **changes: Any) -> Dict[str, Any]:
    data: Dict[str, Any] = {
        "model": {"path": str(DEMO_MODEL)},
        "backend": {"type": "onnxruntime", "threads": 1},
        "state_dir": str(tmp_path / "state"),
        "cameras": [{"name": "cam", "source": {"type": "file", "path": str(DEMO_CLIP)}}],
        "mqtt": {"enabled": False},
        "telemetry": {"type": "none"},
    }
    data.update(changes)
    return data


def check_config(tmp_path: Path, data: Dict[str, Any]) -> subprocess.CompletedProcess:
    path = tmp_path / "edgedet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "edgedet", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_config_passes_a_config_whose_files_exist(tmp_path: Path) -> None:
    proc = check_config(tmp_path, _config(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and proc.stderr == ""


def test_check_config_names_every_missing_file(tmp_path: Path) -> None:
    data = _config(
        tmp_path,
        model={"path": "models/gone.onnx", "labels": "labels/gone.txt"},
        backend={
            "type": "tensorrt",
            "qdq_model": "gone_qdq.onnx",
            "fp16_model": "gone_fp16.onnx",
            "calibration": "calib/",
        },
        cameras=[{"name": "cam", "source": {"type": "file", "path": "videos/gone.mp4"}}],
        mqtt={"host": "broker", "tls": {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem"}},
    )
    proc = check_config(tmp_path, data)
    assert proc.returncode == 1
    for where in (
        "model.path",
        "model.labels",
        "backend.qdq_model",
        "backend.fp16_model",
        "backend.calibration",
        "cameras[cam].source.path",
        "mqtt.tls.ca_file",
        "mqtt.tls.cert_file",
        "mqtt.tls.key_file",
    ):
        assert f"error: {where}: " in proc.stderr, (where, proc.stderr)
    # relative paths are resolved against the config file's folder, and the message says so
    assert str(tmp_path / "videos" / "gone.mp4") in proc.stderr
    assert "OK" not in proc.stdout


def test_check_config_no_files_checks_the_file_only(tmp_path: Path) -> None:
    data = _config(tmp_path, model={"path": "models/gone.onnx"})
    path = tmp_path / "edgedet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "edgedet", "check-config", "--no-files", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
    assert check_config(tmp_path, data).returncode == 1  # without the flag the missing model is an error


def test_absent_video_device_is_a_warning_not_an_error(tmp_path: Path) -> None:
    cams = [
        {"name": "cam", "source": {"type": "file", "path": str(DEMO_CLIP)}},
        {"name": "usb", "source": {"type": "v4l2", "device": "/dev/video99"}},
        {"name": "usb2", "source": {"type": "v4l2", "device": 98}},
    ]
    proc = check_config(tmp_path, _config(tmp_path, cameras=cams))
    assert proc.returncode == 0, proc.stderr
    assert "warning: cameras[usb].source.device: /dev/video99 does not exist" in proc.stderr
    assert "warning: cameras[usb2].source.device: /dev/video98 does not exist" in proc.stderr


def test_rtsp_cameras_are_not_checked_at_all(tmp_path: Path) -> None:
    cams = [{"name": "door", "source": {"type": "rtsp", "url": "rtsp://127.0.0.1:1/none"}}]
    findings = check_references(parse_config(yaml.safe_dump(_config(tmp_path, cameras=cams))))
    assert findings == []  # a camera that is not up yet is a transient state, never a config error


def test_gstreamer_source_needs_an_opencv_with_gstreamer(tmp_path: Path) -> None:
    if opencv_has_gstreamer(load_cv2("this test")):
        pytest.skip("this OpenCV has GStreamer: the error cannot happen here")
    cams = [
        {"name": "csi", "source": {"type": "csi"}},
        {"name": "g", "source": {"type": "gstreamer", "pipeline": "x"}},
    ]
    findings = check_references(parse_config(yaml.safe_dump(_config(tmp_path, cameras=cams))))
    assert [(f.severity, f.where) for f in findings] == [
        (ERROR, "cameras[csi].source"),
        (ERROR, "cameras[g].source"),
    ]
    assert "OpenCV built with GStreamer" in findings[0].message
    assert WARNING not in {f.severity for f in findings}
