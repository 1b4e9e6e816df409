"""A TensorRT double importable as ``tensorrt``, for tests only (never shipped): see bindings.py for the
rules it enforces and where the real bindings decide them, memory.py for how it reaches the addresses
it is given.

``install(monkeypatch, "10.3.0")`` puts a fresh module for that version line (8.5, 10.x, 11.x) into
``sys.modules["tensorrt"]``, makes edgedet's CUDA layer hand out ``runtime`` (a HostRuntime in host
memory by default; the real pycuda runtime on the GPU machine, with DeviceMemory) and returns what
the test needs to look at. Everything is undone by monkeypatch at the end of the test.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any, Optional

from edgedet import cudart
from edgedet.backends.tensorrt import runtime as trt_runtime
from tests.support.fake_tensorrt import bindings
from tests.support.fake_tensorrt.bindings import FakeDevice, World
from tests.support.fake_tensorrt.memory import DeviceMemory, HostMemory, HostRuntime

__all__ = ["DeviceMemory", "FakeDevice", "HostMemory", "HostRuntime", "Installed", "install", "make_module"]

_COMMON = (
    "ILogger", "Builder", "Runtime", "OnnxParser", "Dims", "DataType", "TensorIOMode", "MemoryPoolType",
    "DeviceType", "LayerType", "ICudaEngine", "IExecutionContext", "INetworkDefinition", "ITensor", "ILayer",
    "IOptimizationProfile", "IHostMemory", "ITimingCache", "IParserError",
)  # fmt: skip


def make_module(version: str) -> types.ModuleType:
    """The ``tensorrt`` module of one version line: what exists there and nothing more."""
    major = int(version.split(".")[0])
    module = types.ModuleType("tensorrt", f"TensorRT {version} test double (tests/support/fake_tensorrt)")
    module.__version__ = version  # type: ignore[attr-defined]
    for name in _COMMON:
        setattr(module, name, getattr(bindings, name))
    module.NetworkDefinitionCreationFlag = bindings._creation_flags(major)  # type: ignore[attr-defined]
    module.BuilderFlag = bindings._builder_flags(major)  # type: ignore[attr-defined]
    module.IBuilderConfig = bindings.IBuilderConfig if major >= 11 else bindings.WeakBuilderConfig  # type: ignore[attr-defined]
    module.float32 = bindings.DataType.FLOAT  # type: ignore[attr-defined]
    module.float16 = bindings.DataType.HALF  # type: ignore[attr-defined]
    module.int8 = bindings.DataType.INT8  # type: ignore[attr-defined]
    module.int32 = bindings.DataType.INT32  # type: ignore[attr-defined]
    if major < 11:
        module.IInt8EntropyCalibrator2 = bindings.IInt8EntropyCalibrator2  # type: ignore[attr-defined]
    if major >= 10:
        module.IProgressMonitor = bindings.IProgressMonitor  # type: ignore[attr-defined]
    return module


@dataclass
class Installed:
    module: types.ModuleType
    world: World
    runtime: Any  # the CudaRuntime edgedet gets from open_runtime()

    def switch(
        self, monkeypatch: Any, version: Optional[str] = None, device: Optional[FakeDevice] = None
    ) -> None:
        """Another TensorRT version or GPU from now on (plans built before keep what they were built for)."""
        if version is not None:
            self.module = make_module(version)
            self.world.version = version
            monkeypatch.setitem(sys.modules, "tensorrt", self.module)
            monkeypatch.setattr(trt_runtime, "_LOGGER", None)
        if device is not None:
            self.world.device = device
            if isinstance(self.runtime, HostRuntime):
                self.runtime.device_name = device.name
                self.runtime.compute_capability = device.compute_capability


def install(
    monkeypatch: Any,
    version: str = "10.3.0",
    device: Optional[FakeDevice] = None,
    runtime: Any = None,
    memory: Any = None,
) -> Installed:
    if device is None:  # a real runtime: the double pretends to be TensorRT on that GPU (no DLA)
        device = FakeDevice(runtime.device_name, runtime.compute_capability, 0) if runtime else FakeDevice()
    if runtime is None:
        runtime = HostRuntime(device.name, device.compute_capability)
    world = World(version, device, memory or HostMemory(runtime))
    module = make_module(version)
    monkeypatch.setattr(bindings, "WORLD", world)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_runtime, "_LOGGER", None)  # a logger subclasses one module's ILogger
    monkeypatch.setitem(cudart._RUNTIMES, ("pycuda", 0), runtime)
    return Installed(module, world, runtime)
