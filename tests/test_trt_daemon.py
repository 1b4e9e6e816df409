"""The daemon's pipeline (capture -> CPU preprocessing -> inference worker -> decoder) with the real
TensorRT backend through the TensorRT double, two cameras batched: the CI run of what
tests/gpu/daemon_agreement.py runs on the GPU for 60 s."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")


@pytest.mark.slow
def test_two_cameras_with_cpu_preprocessing_batch_and_agree_with_the_cpu_path(tmp_path: Path) -> None:
    """Defect 1: preprocess cpu + max_batch 2 made the worker pass a list of numpy arrays, which the
    slots rejected: the inference worker failed and the daemon exited."""
    spec = importlib.util.spec_from_file_location(
        "daemon_agreement", REPO / "tests" / "gpu" / "daemon_agreement.py"
    )
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    out = tmp_path / "agreement.json"
    assert runner.main(["--host", "--seconds", "4", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["worker_errors"] == {} and summary["batches_of_2"] > 0
    assert summary["agreement"] == 1.0  # same ONNX Runtime underneath: identical, not just close
