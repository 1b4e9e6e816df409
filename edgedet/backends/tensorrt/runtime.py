"""TensorRT itself: importing it, its version, its one logger, and who we are (TensorRT + GPU).

The modules of this package are the only ones in edgedet that import ``tensorrt``; they do it inside
functions, so importing edgedet never loads TensorRT.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from edgedet.backends.tensorrt.cache import read_platform_model
from edgedet.errors import BackendError, DependencyError

if TYPE_CHECKING:
    import tensorrt as trt

    from edgedet.cudart.api import CudaRuntime

trt_log = logging.getLogger("edgedet.tensorrt")  # TensorRT's own messages

Progress = Callable[[str], None]


def require_tensorrt() -> str:
    """Import TensorRT or raise DependencyError saying where it comes from; returns its version."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(
            "the tensorrt backend needs TensorRT's Python bindings, which come with JetPack "
            "(sudo apt install python3-libnvinfer; in a virtualenv use --system-site-packages) "
            f"- they are not on PyPI for Jetson ({exc})"
        ) from exc
    version = getattr(tensorrt, "__version__", None)
    if version is None or not hasattr(tensorrt, "Runtime"):
        raise DependencyError(
            "the 'tensorrt' module found is not TensorRT's Python bindings (only type stubs installed?)"
        )
    return str(version)


def trt_version_tuple(version: str) -> Tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.3.0.30"."""
    try:
        parts = version.split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise BackendError(f"cannot read the TensorRT version {version!r}") from exc


def trt_major(version: str) -> int:
    return trt_version_tuple(version)[0]


_LOGGER: Optional[trt.ILogger] = None
_LOGGER_LOCK = threading.Lock()


def trt_logger() -> trt.ILogger:
    """The process's one TensorRT logger, routed into Python logging ('edgedet.tensorrt')."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = _make_logger()
        return _LOGGER


def reset_logger() -> None:
    """Forget the logger (tests that swap the tensorrt module between TensorRT versions)."""
    global _LOGGER
    with _LOGGER_LOCK:
        _LOGGER = None


def _make_logger() -> trt.ILogger:
    import tensorrt as trt

    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,  # TensorRT's INFO is build chatter
        severity.VERBOSE: 5,
    }

    class PythonLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the pybind11 trampoline needs the base initialiser

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            try:
                level = levels.get(severity, logging.INFO)
                if trt_log.isEnabledFor(level):
                    trt_log.log(level, "%s", msg)
            except Exception:  # never raise into TensorRT
                pass

    return PythonLogger()


def dims_tuple(dims: trt.Dims) -> Tuple[int, ...]:
    """A trt.Dims as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def expand_path(path: str) -> Path:
    return Path(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class RuntimeIdentity:
    trt_version: str
    device_name: str
    compute_capability: str
    platform: str

    def describe(self) -> str:
        where = f"{self.device_name} (sm_{self.compute_capability.replace('.', '')})"
        if self.platform:
            where += f" on {self.platform}"
        return f"TensorRT {self.trt_version} on {where}"


def runtime_identity(runtime: CudaRuntime, trt_version: str) -> RuntimeIdentity:
    major, minor = runtime.compute_capability
    return RuntimeIdentity(trt_version, runtime.device_name, f"{major}.{minor}", read_platform_model())
