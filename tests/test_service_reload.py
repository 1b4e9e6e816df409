"""The reload plan: which stages restart for a configuration edit (pure, on real parsed configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from edgedet.config import Config, parse_config
from edgedet.service.reload import ReloadPlan, captures_must_restart, plan_reload
from edgedet.types import InputSpec

BASE: Dict[str, Any] = {
    "model": {"path": "yolox_nano.onnx", "score_threshold": 0.3},
    "cameras": [
        {"name": "front", "source": {"type": "file", "path": "a.mp4"}},
        {"name": "yard", "source": {"type": "rtsp", "url": "rtsp://10.0.0.5/stream"}},
    ],
    "mqtt": {"host": "broker.local"},
}


def _config(**changes: Any) -> Config:
    data = yaml.safe_load(yaml.safe_dump(BASE))  # deep copy
    for dotted, value in changes.items():
        node = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return parse_config(yaml.safe_dump(data), base_dir=Path("/etc/edgedet"))


def _plan(**changes: Any) -> ReloadPlan:
    return plan_reload(_config(), _config(**changes))


def test_same_config_changes_nothing() -> None:
    plan = plan_reload(_config(), _config())
    assert not plan.changed and plan.summary() == "no change"


def test_cameras_by_name() -> None:
    cams: List[Dict[str, Any]] = [
        {"name": "yard", "source": {"type": "rtsp", "url": "rtsp://10.0.0.6/stream"}},  # changed url
        {"name": "gate", "source": {"type": "v4l2", "device": "/dev/video0"}},  # new
    ]
    plan = _plan(cameras=cams)
    assert plan.cameras_added == ("gate",)
    assert plan.cameras_removed == ("front",)
    assert plan.cameras_changed == ("yard",)
    assert not (plan.restart_inference or plan.restart_publisher or plan.restart_all_captures)
    assert plan.captures_to_restart(_config(cameras=cams)) == ("gate", "yard")
    assert "cameras added: gate" in plan.summary() and "cameras removed: front" in plan.summary()


def test_camera_order_does_not_matter_and_disabled_counts_as_removed() -> None:
    assert not _plan(cameras=list(reversed(BASE["cameras"]))).changed
    cams = [dict(BASE["cameras"][0], enabled=False), BASE["cameras"][1]]
    plan = _plan(cameras=cams)
    assert plan.cameras_removed == ("front",) and not plan.cameras_changed


def test_camera_setting_change_restarts_only_that_camera() -> None:
    cams = [dict(BASE["cameras"][0], max_fps=5), BASE["cameras"][1]]
    plan = _plan(cameras=cams)
    assert plan.cameras_changed == ("front",) and not plan.cameras_added and not plan.cameras_removed


def test_decoder_setting_restarts_inference_not_captures() -> None:
    plan = _plan(model__score_threshold=0.5)
    assert plan.restart_inference and not plan.restart_all_captures
    assert not plan.restart_publisher and not plan.restart_telemetry


@pytest.mark.parametrize(
    "changes",
    [
        {"model__path": "other.onnx"},
        {"model__channel_order": "rgb"},
        {"model__letterbox_center": True},
        {"preprocess": {"type": "cpu"}},
        {"backend": {"type": "tensorrt"}},
    ],
)
def test_preprocessing_changes_restart_every_capture(changes: Dict[str, Any]) -> None:
    plan = _plan(**changes)
    assert plan.restart_inference and plan.restart_all_captures
    assert plan.captures_to_restart(_config(**changes)) == ("front", "yard")
    assert "all captures restart" in plan.summary()


def test_backend_setting_restarts_inference_only() -> None:
    plan = _plan(backend={"type": "onnxruntime", "threads": 2})
    assert plan.restart_inference and not plan.restart_all_captures


def test_publisher_and_telemetry() -> None:
    plan = _plan(mqtt__host="other.local")
    assert plan.restart_publisher and not plan.restart_inference and not plan.restart_telemetry
    assert _plan(device_id="jetson-7").restart_publisher
    plan = _plan(telemetry__interval_s=2.0)
    assert plan.restart_telemetry and not plan.restart_publisher


def test_in_place_settings() -> None:
    plan = _plan(log_level="debug", stats__interval_s=30, service__heartbeat_timeout_s=20)
    assert plan.in_place == ("log_level", "stats", "service")
    assert not (plan.restart_inference or plan.restart_publisher or plan.restart_telemetry)
    assert not (plan.cameras_added or plan.cameras_removed or plan.cameras_changed)
    assert plan.changed


def test_state_dir_moves_engine_cache_and_outbox() -> None:
    plan = _plan(state_dir="/var/lib/other")
    assert plan.restart_inference and plan.restart_publisher and not plan.restart_all_captures


def test_input_spec_decides_after_the_model_loads() -> None:
    plan = _plan(backend={"type": "onnxruntime", "threads": 2})
    spec = InputSpec("images", 416, 416)
    assert not captures_must_restart(plan, spec, InputSpec("images", 416, 416))
    assert captures_must_restart(plan, spec, InputSpec("images", 640, 640))
    assert captures_must_restart(plan, spec, InputSpec("images", 416, 416, dtype="float16"))
    # no inference restart: the spec cannot have changed
    assert not captures_must_restart(_plan(mqtt__host="x"), spec, InputSpec("images", 640, 640))


def test_camera_stop_start_lists_and_aliases() -> None:
    cams: List[Dict[str, Any]] = [
        {"name": "yard", "source": {"type": "rtsp", "url": "rtsp://10.0.0.6/stream"}},
        {"name": "gate", "source": {"type": "v4l2", "device": "/dev/video0"}},
    ]
    plan = _plan(cameras=cams, log_level="debug")
    assert plan.cameras_to_stop == ("front", "yard")
    assert plan.cameras_to_start == ("gate", "yard")
    assert plan.log_level_changed and plan.describe() == plan.summary()
    assert not _plan(stats__interval_s=3).log_level_changed
