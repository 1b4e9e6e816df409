"""A raw GStreamer pipeline string ending in an appsink that delivers BGR frames."""

from __future__ import annotations

import logging
from typing import Any

from edgedet.errors import SourceError
from edgedet.sources.base import CvCaptureReader, open_video_capture, redact_url, require_gstreamer
from edgedet.sources.config import GstreamerSource

log = logging.getLogger(__name__)


def _short(pipeline: str, limit: int = 60) -> str:
    text = redact_url(" ".join(pipeline.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GstreamerReader(CvCaptureReader):
    def __init__(self, cfg: GstreamerSource) -> None:
        self.cfg = cfg
        super().__init__(f"GStreamer pipeline '{_short(cfg.pipeline)}'")

    def _open_capture(self, cv2: Any) -> Any:
        require_gstreamer(cv2, f"the {self.description}")
        if "appsink" not in self.cfg.pipeline:
            raise SourceError(
                f"{self.description}: the pipeline must end in an appsink (OpenCV reads from it)"
            )
        return open_gstreamer(cv2, self.cfg.pipeline, self.description)


def open_gstreamer(cv2: Any, pipeline: str, description: str) -> Any:
    """Open ``pipeline`` with OpenCV's GStreamer backend or raise a SourceError naming the source."""
    return open_video_capture(
        cv2,
        pipeline,
        cv2.CAP_GSTREAMER,
        description,
        "GStreamer could not start the pipeline (a missing element, wrong caps, or the "
        "device is busy; try it with gst-launch-1.0 to see why)",
    )
