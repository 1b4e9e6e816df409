"""A USB/V4L2 camera by device path or index, with the requested size, rate and pixel format."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Union

from edgedet.errors import SourceError
from edgedet.sources.base import CvCaptureReader, open_video_capture
from edgedet.sources.config import V4l2Source

log = logging.getLogger(__name__)


def device_path(device: Union[int, str]) -> Union[int, str]:
    """``0``, ``"0"`` and ``"/dev/video0"`` name the same camera; other strings are kept as paths."""
    if isinstance(device, int):
        return device
    text = device.strip()
    return int(text) if text.isdigit() else text


class V4l2Reader(CvCaptureReader):
    def __init__(self, cfg: V4l2Source) -> None:
        self.cfg = cfg
        self.device = device_path(cfg.device)
        self.node = f"/dev/video{self.device}" if isinstance(self.device, int) else self.device
        super().__init__(f"camera {self.node}")

    def _open_capture(self, cv2: Any) -> Any:
        if sys.platform.startswith("linux") and not os.path.exists(self.node):
            raise SourceError(
                f"{self.description}: no such device (is the camera plugged in? `ls /dev/video*` or "
                "`v4l2-ctl --list-devices` lists the cameras this machine sees)"
            )
        if sys.platform.startswith("linux") and not os.access(self.node, os.R_OK | os.W_OK):
            raise SourceError(
                f"{self.description}: permission denied (add the service user to the 'video' group)"
            )
        cap = open_video_capture(
            cv2,
            self.device,
            cv2.CAP_V4L2,
            self.description,
            "cannot open as a V4L2 capture device (busy in another program, "
            "or not a camera: some /dev/video nodes are metadata-only)",
        )
        self._configure(cv2, cap)
        return cap

    def _configure(self, cv2: Any, cap: Any) -> None:
        cfg = self.cfg
        # the pixel format first: it decides which sizes and rates the driver offers
        if cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        # drivers silently pick the nearest mode they support: say what we actually got
        got_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        got_fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code > 0 else "?"
        wanted = (cfg.width, cfg.height, cfg.fps, cfg.fourcc)
        if (cfg.width and cfg.width != got_w) or (cfg.height and cfg.height != got_h):
            log.warning(
                "%s: asked for %sx%s, the driver gave %dx%d",
                self.description,
                cfg.width,
                cfg.height,
                got_w,
                got_h,
            )
        if cfg.fps and got_fps and abs(got_fps - cfg.fps) > 0.5:
            log.warning("%s: asked for %s fps, the driver gave %.1f", self.description, cfg.fps, got_fps)
        log.info(
            "%s: opened %dx%d %.1f fps %s (requested %s)",
            self.description,
            got_w,
            got_h,
            got_fps,
            got_fourcc,
            wanted,
        )
