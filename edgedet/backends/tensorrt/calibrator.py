"""Implicit INT8 calibration (TensorRT 8.5-10): the entropy calibrator, fed by the one calibration reader
(edgedet/sources/calibration.py) through CalibrationBatches (edgedet/preprocess/calibration_data.py).

TensorRT calls the calibrator from inside ``build_serialized_network``: ``get_batch`` returns device
pointers (a list of ints) or None when the data is exhausted, ``read_calibration_cache`` bytes or None.
An exception must not cross into TensorRT, so it is kept and raised after the build. TensorRT 11 has
no calibrators (INT8 comes from Q/DQ models there).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence

import numpy as np

from edgedet.backends.tensorrt.cache import CalibrationKey, EngineCache
from edgedet.backends.tensorrt.request import EngineRequest, source_id, spec_id
from edgedet.backends.tensorrt.runtime import Progress, RuntimeIdentity
from edgedet.backends.tensorrt.shapes import Profile, numpy_dtype
from edgedet.errors import BackendError
from edgedet.preprocess.calibration_data import CalibrationBatches
from edgedet.preprocess.cpu import CpuPreprocessor
from edgedet.sources.calibration import iter_calibration_frames
from edgedet.types import InputSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgedet.backends.config import TensorRTBackend as TensorRTConfig
    from edgedet.cudart.api import CudaRuntime, DeviceBuffer

log = logging.getLogger(__name__)


class CalibratorState:
    """Owns the calibrator's device buffer and remembers an exception raised inside TensorRT's callbacks."""

    def __init__(self, calibrator: object, buffer: DeviceBuffer, runtime: CudaRuntime) -> None:
        self.calibrator = calibrator
        self.buffer = buffer
        self.runtime = runtime
        self.error: Optional[BaseException] = None
        self.images = 0

    def free(self) -> None:
        self.buffer.free()


def _calibration_spec(input_spec: Optional[InputSpec], dtype: str) -> InputSpec:
    if input_spec is None:
        raise BackendError(
            "implicit INT8 calibration needs the model's preprocessing (input_spec) to prepare the "
            "calibration images like inference does"
        )
    # the calibration batches are fed in the network input's own dtype
    wanted = dtype if dtype in ("float32", "float16") else input_spec.dtype
    return dataclasses.replace(input_spec, dtype=wanted)


def attach_calibrator(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    request: EngineRequest,
    cfg: TensorRTConfig,
    runtime: CudaRuntime,
    ident: RuntimeIdentity,
    cache: EngineCache,
    inputs: Sequence[trt.ITensor],
    profiles: Sequence[Profile],
    dynamic: bool,
    input_spec: Optional[InputSpec],
    report: Progress,
) -> CalibratorState:
    import tensorrt as trt

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise BackendError(
            f"TensorRT {ident.trt_version} has no implicit INT8 calibration: give a Q/DQ model "
            "(backend.qdq_model)"
        )
    if request.calibration is None:
        raise BackendError(
            f"INT8 needs calibration data for {request.plan.onnx.name}: set backend.calibration (an image "
            "folder or a video) or give a Q/DQ model (backend.qdq_model, from edgedet quantize)"
        )
    if len(inputs) != 1:
        raise BackendError(f"implicit INT8 calibration supports one input; the model has {len(inputs)}")
    tensor = inputs[0]
    dtype = numpy_dtype(tensor.dtype.name, tensor.name)
    profile = profiles[0]
    spec = _calibration_spec(input_spec, dtype)
    batch = min(profile.max[0], 8) if dynamic else profile.max[0]
    shape = (batch, *profile.max[1:])
    if (spec.height, spec.width) != tuple(shape[2:4]):
        raise BackendError(
            f"the preprocessing spec {spec.width}x{spec.height} does not match the input {shape}"
        )
    if dynamic:
        calib_profile = builder.create_optimization_profile()
        dims = trt.Dims(list(shape))
        calib_profile.set_shape(tensor.name, dims, dims, dims)
        config.set_calibration_profile(calib_profile)

    ckey = CalibrationKey(
        onnx_sha256=request.key.onnx_sha256,
        trt_version=ident.trt_version,
        input_shape=tuple(shape),
        algorithm="entropy2",
        data_id=source_id(request.calibration, cfg.calibration_images),
        preprocess_id=spec_id(spec),
    )
    name = request.model.name
    cached = cache.read_calibration(ckey, name)
    if cached is not None:
        report(f"  using the calibration cache {cache.calibration_path(ckey, name).name}")
    else:
        report(f"  calibrating INT8 on up to {cfg.calibration_images} images from {request.calibration}")
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = runtime.alloc(nbytes)
    stream = runtime.stream()

    def batches() -> Iterator[np.ndarray]:
        found = iter_calibration_frames(request.calibration, cfg.calibration_images, skip_bad=True)
        frames = (image for _, image in found)
        pre = CpuPreprocessor(spec)
        return iter(CalibrationBatches(frames, pre, batch, dtype))

    state: CalibratorState

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base initialiser
            self._batches: Optional[Iterator[np.ndarray]] = None

        def get_batch_size(self) -> int:
            return batch

        # TensorRT wants None (not an empty list) when the data is exhausted
        def get_batch(self, names: List[str]) -> Optional[List[int]]:  # type: ignore[override]
            try:
                if self._batches is None:
                    self._batches = batches()
                array = next(self._batches, None)
                if array is None:
                    return None
                runtime.htod_async(buffer.ptr, np.ascontiguousarray(array), stream)
                stream.synchronize()
                state.images += batch
                if state.images % (batch * 10) == 0:
                    report(f"  calibrated on {state.images} images")
                return [buffer.ptr]
            except BaseException as exc:  # an exception must not cross into TensorRT
                state.error = exc
                return None

        def read_calibration_cache(self) -> Optional[bytes]:  # type: ignore[override]
            return cached

        def write_calibration_cache(self, cache_blob: Any) -> None:
            try:
                path = cache.write_calibration(ckey, name, bytes(cache_blob))
                report(f"  calibration cache written: {path.name}")
            except OSError as exc:
                log.warning("could not write the calibration cache: %s", exc)

    calibrator = EntropyCalibrator()
    state = CalibratorState(calibrator, buffer, runtime)
    config.int8_calibrator = calibrator
    return state
