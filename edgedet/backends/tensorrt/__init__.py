"""The TensorRT backend and engine builder: the only package in edgedet that imports tensorrt.

By life cycle: runtime (importing TensorRT, its logger, who we are), request (what to build and its key),
build (ONNX -> engine), calibrator (implicit INT8), engine (a loaded engine running in slots), factory
(cached engine, else build, else the last good one). Pure helpers beside them, testable without
TensorRT: cache (keys, paths, atomic writes), plan (which ONNX and flags per version), shapes (profiles,
dtypes), layers (the float-layer list), slots and gpu_slots (pipelined slots). TensorRT is imported
inside functions only: importing this package loads neither TensorRT nor CUDA.
"""

from edgedet.backends.tensorrt.build import build_engine
from edgedet.backends.tensorrt.engine import TrtBackend, load_engine
from edgedet.backends.tensorrt.factory import open_tensorrt_backend
from edgedet.backends.tensorrt.runtime import require_tensorrt

__all__ = ["TrtBackend", "build_engine", "load_engine", "open_tensorrt_backend", "require_tensorrt"]
