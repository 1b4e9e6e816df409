"""The TensorRT backend where TensorRT is absent (CI, any non-Jetson machine): clear errors, strict
config, and the stub patcher that lets mypy check edgedet/backends/tensorrt against TensorRT's API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgedet.assets import DEMO_MODEL
from edgedet.backends.config import TensorRTBackend
from edgedet.errors import DependencyError

REPO = Path(__file__).resolve().parent.parent


def _has_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Runtime")


HAS_TRT = _has_tensorrt()


def _stub_setup():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("trt_stubs_setup", REPO / "tools" / "trt_stubs_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_names_jetpack(tmp_path: Path) -> None:
    from edgedet.backends.tensorrt import build_engine, open_tensorrt_backend, require_tensorrt

    cfg = TensorRTBackend(type="tensorrt")
    with pytest.raises(DependencyError, match="JetPack"):
        require_tensorrt()
    with pytest.raises(DependencyError, match="python3-libnvinfer"):
        open_tensorrt_backend(cfg, DEMO_MODEL, tmp_path)
    with pytest.raises(DependencyError):
        build_engine(DEMO_MODEL, cfg, tmp_path)
    assert "tensorrt" not in sys.modules or not hasattr(sys.modules["tensorrt"], "Runtime")


def test_importing_the_modules_does_no_work() -> None:
    """No TensorRT, pycuda or CUDA initialisation at import time (they load inside functions)."""
    code = (
        "import sys, edgedet.backends.tensorrt, edgedet.preprocess.cuda, edgedet.preprocess.bench; "
        "print(sorted(m for m in ('tensorrt', 'pycuda', 'pycuda.driver') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_defaults_and_strictness() -> None:
    cfg = TensorRTBackend(type="tensorrt")
    assert (cfg.precision, cfg.max_batch, cfg.slots, cfg.timing_cache, cfg.build_on_start) == (
        "fp16",
        1,
        2,
        True,
        True,
    )
    TensorRTBackend(
        type="tensorrt", precision="int8", calibration="calib/", float_layers="layers.txt", max_batch=4
    )
    with pytest.raises(ValidationError, match="extra"):
        TensorRTBackend(type="tensorrt", presicion="fp16")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="opt_batch"):
        TensorRTBackend(type="tensorrt", max_batch=2, opt_batch=4)
    with pytest.raises(ValidationError, match="fp16 or int8"):
        TensorRTBackend(type="tensorrt", dla_core=0, precision="fp32")
    with pytest.raises(ValidationError, match="max_batch 1"):
        TensorRTBackend(type="tensorrt", dla_core=0, max_batch=2)
    with pytest.raises(ValidationError):
        TensorRTBackend(type="tensorrt", slots=0)


def test_stub_patcher_fixes_what_mypy_rejects() -> None:
    tool = _stub_setup()
    line = (
        "    def add_scale_nd(self, input: ITensor, mode: ScaleMode, shift: Weights = None, "
        "channel_axis: int) -> IScaleLayer:"
    )
    assert tool.fix_def_line(line).endswith("shift: Weights = None, channel_axis: int = ...) -> IScaleLayer:")
    line = (
        "    def configure_plugin(self: IPluginV3, in: list[DynamicPluginTensorDesc], out: list[X]) -> None:"
    )
    assert "in_: list[DynamicPluginTensorDesc]" in tool.fix_def_line(line)
    kw = "    def f(self, a: int = 1, *, b: int) -> None:"
    assert tool.fix_def_line(kw) == kw  # keyword-only parameters need no default
    nested = "    def g(self, a: dict[str, int] = {'x': 1, 'y': 2}, b: tuple[int, int]) -> None:"
    assert tool.fix_def_line(nested).endswith("b: tuple[int, int] = ...) -> None:")
    text = "import tensorrt_libs as tensorrt_libs\nfrom tensorrt_bindings import volume\n"
    assert tool.patch_text(text) == "from tensorrt_bindings import volume\n"
