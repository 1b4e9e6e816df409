"""`edgedet detect --track` on the real vtest clip: track ids and tracking messages on stdout (each valid
against its schema), and an annotated video with ids, a zone and a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgedet.assets import DEMO_MODEL
from edgedet.cli import build_parser
from edgedet.commands.detect import run_detect
from edgedet.publish.schema import MessageValidator


@pytest.mark.slow
def test_detect_track_prints_valid_tracking_messages_and_draws_the_scene(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    cv2: Any = pytest.importorskip("cv2")
    config = {
        "model": {"path": str(DEMO_MODEL)},
        "cameras": [{"name": "plaza", "source": {"type": "file", "path": "unused.mp4"}}],
        "tracking": {
            "cameras": {
                "plaza": {
                    "zones": [
                        {"name": "road", "points": [[0.55, 0.33], [1.0, 0.28], [1.0, 0.62], [0.55, 0.58]]}
                    ],
                    "lines": [{"name": "crossing", "points": [[0.45, 0.62], [0.45, 0.3]]}],
                }
            }
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "annotated.mp4"
    clip = shared_dir / "data" / "video" / "vtest.avi"
    args = build_parser().parse_args(
        ["detect", "--track", "-c", str(tmp_path / "c.yaml"), str(clip), "-o", str(out), "--max-frames", "25"]
    )
    assert run_detect(args) == 0
    messages = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    validator = MessageValidator()
    assert all(validator.errors(msg) == [] for msg in messages)
    kinds = {msg["type"] for msg in messages}
    assert {"detections", "object", "occupancy", "line_count"} <= kinds
    ids = {b["track_id"] for msg in messages if msg["type"] == "detections" for b in msg["detections"]}
    assert len(ids - {None}) >= 3  # several people on the plaza
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 25
