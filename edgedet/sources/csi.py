"""A CSI camera through nvarguscamerasrc: only on an NVIDIA Jetson with an OpenCV that has GStreamer."""

from __future__ import annotations

import logging
from typing import Any

from edgedet.errors import SourceError
from edgedet.sources.base import CvCaptureReader, is_jetson, require_gstreamer
from edgedet.sources.config import CsiSource
from edgedet.sources.gstreamer import open_gstreamer

log = logging.getLogger(__name__)


def csi_pipeline(cfg: CsiSource) -> str:
    """NVMM NV12 from the ISP, converted to BGR on the VIC (nvvidconv) and by videoconvert."""
    return (
        f"nvarguscamerasrc sensor-id={cfg.sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={cfg.width},height={cfg.height},framerate={cfg.fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={cfg.flip_method} ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
    )


class CsiReader(CvCaptureReader):
    def __init__(self, cfg: CsiSource) -> None:
        self.cfg = cfg
        super().__init__(f"CSI camera {cfg.sensor_id}")

    def _open_capture(self, cv2: Any) -> Any:
        if not is_jetson():
            raise SourceError(
                f"{self.description}: CSI cameras (nvarguscamerasrc) work only on an NVIDIA Jetson, and "
                "this machine is not one; use a v4l2, rtsp or file source here"
            )
        require_gstreamer(cv2, f"the {self.description}")
        return open_gstreamer(cv2, csi_pipeline(self.cfg), self.description)
