"""A small interface over the CUDA calls edgedet makes (context, streams, pinned/mapped memory, copies,
kernels, events), so the pycuda implementation can be joined by a cuda-python one.

Nothing here imports pycuda at import time; ``open_runtime`` picks and loads an implementation.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Dict, Tuple

if TYPE_CHECKING:
    from edgedet.cudart.api import CudaRuntime

IMPLEMENTATIONS = ("pycuda",)

_LOCK = threading.Lock()
_RUNTIMES: Dict[Tuple[str, int], CudaRuntime] = {}


def open_runtime(device: int = 0, impl: str = "pycuda") -> CudaRuntime:
    """The process-wide CUDA runtime for ``device``: its primary context (the one TensorRT's runtime API
    uses), shared by the preprocessors and the backend so they can hand device pointers to each other.

    Raises DependencyError naming the pip extra when the implementation is not installed, and
    edgedet.errors.BackendError when CUDA cannot be initialised (no driver, no such device).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown CUDA implementation {impl!r} (one of: {', '.join(IMPLEMENTATIONS)})")
    with _LOCK:
        runtime = _RUNTIMES.get((impl, device))
        if runtime is None:
            from edgedet.cudart.pycuda_impl import PycudaRuntime

            runtime = PycudaRuntime.open(device)
            _RUNTIMES[(impl, device)] = runtime
        return runtime
