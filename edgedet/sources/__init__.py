"""Frame sources (file, V4L2/USB, RTSP, GStreamer, CSI), each read in its own capture thread."""

from edgedet.sources.base import FrameReader
from edgedet.sources.registry import open_reader

__all__ = ["FrameReader", "open_reader"]
