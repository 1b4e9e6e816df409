"""Zones and lines in the config: `edgedet check-config` and `edgedet run` refuse the same bad polygons
with a message naming the line of the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from edgedet.config import parse_config
from edgedet.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

BASE = """\
model:
  path: m.onnx
cameras:
  - name: front
    source: {type: file, path: clip.mp4}
tracking:
  cameras:
    front:
"""


def problems(scene: str) -> List[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + scene, source="cfg.yaml")
    return info.value.problems


def test_a_good_scene_parses() -> None:
    config = parse_config(
        BASE
        + """\
      units: pixel
      frame_size: [640, 480]
      zones:
        - {name: yard, points: [[0, 240], [640, 240], [640, 480], [0, 480]], classes: [person], dwell_s: 2}
      lines:
        - {name: gate, points: [[320, 0], [320, 480]]}
      required_zones: [yard]
"""
    )
    scene = config.tracking.cameras["front"]
    assert scene.zones[0].points[1] == (640.0, 240.0) and scene.lines[0].name == "gate"


def test_a_self_intersecting_polygon_is_refused() -> None:
    out = problems("      zones:\n        - {name: bowtie, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}\n")
    assert (
        len(out) == 1 and out[0].startswith("cfg.yaml:10:") and "bowtie: the polygon crosses itself" in out[0]
    )


def test_a_polygon_needs_three_points() -> None:
    out = problems("      zones:\n        - {name: thin, points: [[0, 0], [1, 1]]}\n")
    assert "cfg.yaml:10:" in out[0] and "at least 3 items" in out[0]


def test_points_outside_the_frame_are_refused() -> None:
    out = problems("      zones:\n        - {name: big, points: [[0, 0], [1.5, 0], [1, 1]]}\n")
    assert "zone big: point (1.5, 0) is outside the frame (0..1 x 0..1 in normalized units)" in out[0]
    out = problems(
        "      units: pixel\n      frame_size: [640, 480]\n"
        "      lines:\n        - {name: gate, points: [[0, 0], [700, 100]]}\n"
    )
    assert "line gate: point (700, 100) is outside the frame (0..640 x 0..480" in out[0]


def test_pixel_units_need_the_frame_size() -> None:
    out = problems(
        "      units: pixel\n      zones:\n        - {name: z, points: [[0, 0], [10, 0], [10, 10]]}\n"
    )
    assert "units: pixel needs frame_size" in out[0]


def test_required_zones_must_name_zones_and_cameras_must_exist() -> None:
    out = problems("      required_zones: [nowhere]\n")
    assert "required_zones names no zone of this camera: nowhere" in out[0]
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace("    front:\n", "    back: {}\n"), source="cfg.yaml")
    assert "tracking.cameras names no configured camera: back" in info.value.problems[0]


def test_a_line_needs_two_different_points() -> None:
    out = problems("      lines:\n        - {name: dot, points: [[0.5, 0.5], [0.5, 0.5]]}\n")
    assert "line dot: its two points are the same" in out[0]


def test_check_config_refuses_a_bad_polygon(tmp_path: Path) -> None:
    path = tmp_path / "edgedet.yaml"
    path.write_text(
        BASE + "      zones:\n        - {name: bowtie, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgedet", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"{path}:10:" in proc.stderr + proc.stdout and "crosses itself" in proc.stderr + proc.stdout
