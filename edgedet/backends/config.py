"""Backend configuration; the ``type`` field picks the module in edgedet/backends/."""

from typing import Any, Dict, List, Optional, Union

from pydantic import Field, model_validator
from typing_extensions import Annotated, Literal

from edgedet.configbase import Strict


class OnnxRuntimeBackend(Strict):
    type: Literal["onnxruntime"]
    # intra-op threads per instance (0: ONNX Runtime decides, usually one per core)
    threads: int = Field(default=0, ge=0)
    # parallel inference workers, each with its own session (like Frigate's several CPU detectors): on a
    # CPU, `instances: <cores>` with `threads: 1` gives the most frames/s; results stay in frame order
    instances: int = Field(default=1, ge=1, le=16)
    providers: List[str] = ["CPUExecutionProvider"]


class TensorRTBackend(Strict):
    """TensorRT on Jetson (8.5 through 11). Relative paths are relative to the config file.

    The engine is built from model.path on first start and cached in <state_dir>/engines, keyed by the
    ONNX sha256, precision, TensorRT version, GPU, input shapes, batch range and DLA core; a key change
    rebuilds it, and a failed rebuild falls back to the last engine that loaded.
    """

    type: Literal["tensorrt"]
    # fp32 | fp16 | int8 (INT8 with FP32 fallback) | best (INT8 with FP16 fallback)
    precision: Literal["fp32", "fp16", "int8", "best"] = "fp16"
    # a prebuilt engine; when None the engine is built from model.path and cached in state_dir/engines
    engine: Optional[str] = None
    # build when no cached engine matches (false: fail instead, e.g. on a read-only fleet image)
    build_on_start: bool = True
    device: int = Field(default=0, ge=0)
    # frames (cameras) batched into one inference; needs an ONNX with a dynamic batch axis when > 1
    max_batch: int = Field(default=1, ge=1, le=64)
    # batch size the engine is tuned for (default: max_batch)
    opt_batch: Optional[int] = Field(default=None, ge=1)
    workspace_mb: int = Field(default=1024, gt=0)
    # DLA core (Xavier, Orin except Orin Nano); layers the DLA cannot run fall back to the GPU
    dla_core: Optional[int] = Field(default=None, ge=0)
    gpu_fallback: bool = True
    # explicit INT8: a Q/DQ ONNX (edgedet quantize, QAT, ModelOpt); the only INT8 path on TensorRT 11,
    # preferred over implicit calibration on every version when given
    qdq_model: Optional[str] = None
    # FP16 on TensorRT 11 (strongly typed networks): an FP16 ONNX (edgedet quantize --fp16)
    fp16_model: Optional[str] = None
    # implicit INT8 calibration input (TensorRT 8.5-10): an image folder or a video file
    calibration: Optional[str] = None
    calibration_images: int = Field(default=200, gt=0)
    # layers kept in float (from `edgedet quantize`; see docs/jetson.md for the format), applied on
    # TensorRT 8.5-10 builds
    float_layers: Optional[str] = None
    # persist TensorRT's timing cache in state_dir/timing: rebuilds take a fraction of the time
    timing_cache: bool = True
    # engines kept per model in state_dir/engines (older ones are deleted after a successful build)
    keep_engines: int = Field(default=3, ge=1)
    # in-flight inference slots (streams); 2 lets upload/execute/download of consecutive frames overlap
    slots: int = Field(default=2, ge=1, le=8)

    @model_validator(mode="after")
    def _consistent(self) -> "TensorRTBackend":
        if self.opt_batch is not None and self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch ({self.opt_batch}) must not exceed max_batch ({self.max_batch})")
        if self.dla_core is not None:
            if self.precision == "fp32":
                raise ValueError("the DLA runs fp16 or int8 only: set precision to fp16, int8 or best")
            if self.max_batch != 1:
                raise ValueError("the DLA has no dynamic shapes: use max_batch 1 with dla_core")
        return self


class PythonBackend(Strict):
    """A backend of your own: ``factory`` is "package.module:callable", called as
    ``factory(model_path=..., state_dir=..., **options)`` and returning an object with the Backend
    protocol of edgedet/backends/base.py (inputs, outputs, metadata, infer, close)."""

    type: Literal["python"]
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: Dict[str, Any] = {}


BackendConfig = Annotated[
    Union[OnnxRuntimeBackend, TensorRTBackend, PythonBackend], Field(discriminator="type")
]


class PreprocessConfig(Strict):
    # auto: cuda when the backend is tensorrt and pycuda is importable, cpu otherwise
    type: Literal["auto", "cpu", "cuda"] = "auto"
