"""The YAML config: the shipped example parses; every kind of bad input names its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.config import load_config, parse_config
from edgedet.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
model:
  path: m.onnx
cameras:
  - name: a
    source: {type: file, path: clip.mp4}
"""


def test_example_config_parses_and_covers_every_section() -> None:
    config = load_config(REPO / "config" / "edgedet.yaml")
    assert config.device_id == "jetson-01"
    assert config.cameras[0].source.type == "file"
    assert config.mqtt.messages.events.durable is True
    assert config.telemetry.throttle.steps[0].above_c == 80


def test_builtin_demo_config_points_at_bundled_assets() -> None:
    config = load_config(REPO / "edgedet" / "assets" / "demo.yaml")
    assert config.resolve_path(config.model.path).is_file()
    source = config.cameras[0].source
    assert source.type == "file"
    assert config.resolve_path(source.path).is_file()


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "edgedet.yaml").write_text(MINIMAL)
    config = load_config(tmp_path / "edgedet.yaml")
    assert config.resolve_path(config.model.path) == tmp_path / "m.onnx"


def test_defaults_are_filled() -> None:
    config = parse_config(MINIMAL)
    assert config.backend.type == "onnxruntime"
    assert config.mqtt.effective_port == 1883
    assert config.cameras[0].reconnect.max_s == 30


def problems(text: str) -> list:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="cfg.yaml")
    return info.value.problems


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: malformed YAML"):
        parse_config("model:\n  path: m.onnx\n  bad: a: b\ncameras: []\n", source="cfg.yaml")


def test_unknown_key_names_line_and_path() -> None:
    found = problems(MINIMAL.replace("  path: m.onnx", "  path: m.onnx\n  colour: bgr"))
    assert found == [
        "cfg.yaml:3: model.colour: unknown key (not a setting edgedet knows; check spelling and indentation)"
    ]


def test_wrong_types_and_missing_keys_are_all_reported() -> None:
    text = MINIMAL + "mqtt:\n  port: abc\n  keepalive_s: 1\n"
    text = text.replace("source: {type: file, path: clip.mp4}", "source: {type: rtsp, url: http://x}")
    found = problems(text)
    assert any(p.startswith("cfg.yaml:5: cameras.0.source.url") for p in found)
    assert any(p.startswith("cfg.yaml:7: mqtt.port: Input should be a valid integer") for p in found)
    assert any(p.startswith("cfg.yaml:8: mqtt.keepalive_s") for p in found)


def test_unknown_source_type_is_named() -> None:
    found = problems(MINIMAL.replace("type: file", "type: webcam"))
    assert len(found) == 1 and "cameras.0.source" in found[0] and "webcam" in found[0]


def test_duplicate_camera_names_are_rejected() -> None:
    text = MINIMAL + "  - name: a\n    source: {type: file, path: other.mp4}\n"
    assert any("repeated: a" in p for p in problems(text))


def test_missing_required_sections() -> None:
    found = problems("log_level: info\n")
    assert sorted(found) == [
        "cfg.yaml:1: cameras: required setting is missing",
        "cfg.yaml:1: model: required setting is missing",
    ]


def test_empty_and_non_mapping_files() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_config("", source="cfg.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", source="cfg.yaml")


def test_loading_a_missing_config_file_says_config_file_not_found() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/edgedet.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgedet", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_cli_prints_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("  path: m.onnx", "  path: m.onnx\n  colour: bgr") + "mqtt: {port: abc}\n")
    proc = run_cli("check-config", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:3: model.colour: unknown key" in proc.stderr
    assert f"{bad}:7: mqtt.port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_cli_accepts_the_example() -> None:
    # the example points at the demo assets install-service puts under /usr/local/share/edgedet: here
    # only the file itself is checked (tests/test_service_preflight.py covers what it points to)
    proc = run_cli("check-config", "--no-files", str(REPO / "config" / "edgedet.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def _setting_names(model: type, seen: set) -> set:
    """Every field name of a config model and of the models nested in it (unions included)."""
    import typing

    from pydantic import BaseModel

    names = set()
    if model in seen:
        return names
    seen.add(model)
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        names.add(name)
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names |= _setting_names(tp, seen)
            stack.extend(typing.get_args(tp))
    return names


def test_example_config_documents_every_setting() -> None:
    from edgedet.config import Config

    text = (REPO / "config" / "edgedet.yaml").read_text()
    missing = sorted(n for n in _setting_names(Config, set()) if f"{n}:" not in text and f"{n} " not in text)
    assert missing == [], f"settings not shown in config/edgedet.yaml: {missing}"
