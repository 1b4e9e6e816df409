"""ONNX Runtime backend: the CPU path (and any other ORT execution provider a user names)."""

from __future__ import annotations

import json
import logging
import mmap
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgedet.errors import BackendError, ModelError, require
from edgedet.types import TensorSpec

log = logging.getLogger(__name__)

# ONNX Runtime's type strings -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

# op types that only appear in quantized graphs; they are stored as plain strings in the protobuf
_INT8_MARKERS = (b"QuantizeLinear", b"QLinearConv", b"QLinearMatMul", b"ConvInteger", b"MatMulInteger")


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = _ORT_PREFIX.sub("", " ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_model_file(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    if size == 0:
        raise ModelError(f"model file is empty: {path}")


def graph_has_quantization(path: Path) -> bool:
    """True when the ONNX file contains QuantizeLinear-style nodes (a QDQ or QOperator INT8 model).

    Scans the file's bytes (memory-mapped) for the op-type strings instead of parsing the graph, so the
    ``onnx`` package is not needed on the device.
    """
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return any(m.find(marker) >= 0 for marker in _INT8_MARKERS)
    except (OSError, ValueError):
        return False


def _spec(arg: Any) -> TensorSpec:
    shape: Tuple[Optional[int], ...] = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeBackend:
    """A model loaded in an ONNX Runtime InferenceSession.

    ``threads`` sets intra-op threads (0: ORT decides). ``session_options`` replaces the defaults
    entirely (the quantization tools pass their own, e.g. with graph optimisations disabled).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        threads: int = 0,
        providers: Optional[Sequence[str]] = None,
        session_options: Optional[Any] = None,
    ) -> None:
        ort: Any = require("onnxruntime", "cpu", "the ONNX Runtime backend")
        self.model_path = Path(model_path)
        _check_model_file(self.model_path)
        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = int(threads)
            session_options.inter_op_num_threads = 1
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session_options.log_severity_level = 3  # ORT warnings go to stderr otherwise, unformatted
        wanted = list(providers) if providers else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime execution provider(s) {', '.join(missing)} not available in this "
                f"onnxruntime build (available: {', '.join(available)})"
            )
        self._session: Any = None
        try:
            self._session = ort.InferenceSession(
                str(self.model_path), sess_options=session_options, providers=wanted
            )
        except Exception as exc:  # ORT raises its own exception types per failure kind
            kind = type(exc).__name__
            if kind == "InvalidProtobuf":
                raise ModelError(
                    f"{self.model_path} is not an ONNX model (corrupt, truncated or another format)"
                ) from exc
            if kind == "InvalidGraph" or "Load model from" in str(exc):
                raise ModelError(f"cannot load model {self.model_path}: {_one_line(exc)}") from exc
            raise BackendError(f"ONNX Runtime cannot load {self.model_path}: {_one_line(exc)}") from exc
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        meta = self._session.get_modelmeta()
        self._metadata: Dict[str, str] = dict(meta.custom_metadata_map or {})
        self.precision = self._detect_precision()
        log.info(
            "loaded %s with ONNX Runtime %s (%s, %s, threads=%s)",
            self.model_path,
            ort.__version__,
            self.precision,
            ",".join(self._session.get_providers()),
            threads or "auto",
        )

    def _detect_precision(self) -> str:
        # models made by `edgedet quantize` say what they are (an FP16 model keeps float32 I/O)
        made_by_edgedet = self._metadata.get("edgedet.quantization")
        if made_by_edgedet:
            try:
                info = json.loads(made_by_edgedet)
            except ValueError:
                info = {}
            if info.get("precision") == "fp16":
                return "fp16"
            if info.get("float_layers"):
                return "mixed"  # INT8 with some layers kept in float
        if graph_has_quantization(self.model_path):
            return "int8"
        if any(i.dtype == "float16" for i in self._inputs):
            return "fp16"
        return "fp32"

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._metadata

    @property
    def providers(self) -> List[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise BackendError("the ONNX Runtime backend is closed")
        try:
            results = session.run(self._output_names, dict(feeds))
        except Exception as exc:  # wrong shape/dtype/name: a one-line message, not ORT's essay
            raise BackendError(f"ONNX Runtime inference failed: {_one_line(exc)}") from exc
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self._session = None
