"""The TensorRT double's methods take the parameters the real bindings take: checked against the
tensorrt-stubs package (10.13 API, prepared in .stubs/ by tools/trt_stubs_setup.py, as CI does before
the tests), so a test that passes through the double calls the API as TensorRT spells it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.support.fake_tensorrt import bindings

STUBS = Path(__file__).resolve().parent.parent / ".stubs" / "tensorrt_bindings" / "tensorrt.pyi"
CLASSES = (
    "Builder", "IBuilderConfig", "IOptimizationProfile", "INetworkDefinition", "ILayer", "OnnxParser",
    "Runtime", "ICudaEngine", "IExecutionContext", "ITimingCache",
)  # fmt: skip
# the double's own helpers (not TensorRT API)
OWN = {"run", "dynamic"}
# the double's TensorRT 8.5-10 builder config (with the calibrator) is IBuilderConfig there
ALIASES = {"WeakBuilderConfig": "IBuilderConfig"}


def _stub_methods() -> Dict[Tuple[str, str], List[List[str]]]:
    tree = ast.parse(STUBS.read_text())
    out: Dict[Tuple[str, str], List[List[str]]] = {}
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef) and cls.name in CLASSES:
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef):
                    params = [a.arg for a in fn.args.args[1:]]
                    out.setdefault((cls.name, fn.name), []).append(params)
    return out


@pytest.mark.skipif(not STUBS.is_file(), reason="run tools/trt_stubs_setup.py first (CI does)")
def test_the_double_spells_every_method_like_the_bindings() -> None:
    stubs = _stub_methods()
    checked: Set[str] = set()
    for double_name in (*CLASSES, *ALIASES):
        cls = getattr(bindings, double_name)
        name = ALIASES.get(double_name, double_name)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr in OWN or not inspect.isfunction(value):
                continue
            params = [p for p in inspect.signature(value).parameters if p != "self"]
            assert (name, attr) in stubs, f"{name}.{attr} is not in the TensorRT API"
            # same names, same order; TensorRT may have further (defaulted) ones edgedet never passes
            overloads = stubs[(name, attr)]
            assert any(o[: len(params)] == params for o in overloads), f"{name}.{attr}{params} != {overloads}"
            checked.add(f"{name}.{attr}")
    assert len(checked) >= 25
