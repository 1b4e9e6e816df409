"""Backend configuration; the ``type`` field picks the module in edgedet/backends/."""

from typing import List, Optional, Union

from pydantic import Field
from typing_extensions import Annotated, Literal

from edgedet.configbase import Strict


class OnnxRuntimeBackend(Strict):
    type: Literal["onnxruntime"]
    # intra-op threads (0: ONNX Runtime decides, usually one per core)
    threads: int = Field(default=0, ge=0)
    providers: List[str] = ["CPUExecutionProvider"]


class TensorRTBackend(Strict):
    type: Literal["tensorrt"]
    precision: Literal["fp32", "fp16", "int8", "best"] = "fp16"
    # a prebuilt engine; when None the engine is built from model.path and cached in state_dir/engines
    engine: Optional[str] = None
    device: int = Field(default=0, ge=0)
    max_batch: int = Field(default=1, ge=1)
    workspace_mb: int = Field(default=1024, gt=0)
    dla_core: Optional[int] = Field(default=None, ge=0)
    # INT8 implicit calibration input: an image folder or a video file
    calibration: Optional[str] = None
    calibration_images: int = Field(default=200, gt=0)
    # layer names kept in float (from `edgedet quantize`), applied on TensorRT 8.5-10 builds
    float_layers: Optional[str] = None
    # in-flight inference slots (streams); 2 lets upload/execute/download of consecutive frames overlap
    slots: int = Field(default=2, ge=1, le=8)


BackendConfig = Annotated[Union[OnnxRuntimeBackend, TensorRTBackend], Field(discriminator="type")]


class PreprocessConfig(Strict):
    # auto: cuda when the backend is tensorrt and pycuda is importable, cpu otherwise
    type: Literal["auto", "cpu", "cuda"] = "auto"
