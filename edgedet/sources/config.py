"""Configuration of each source type; the ``type`` field picks the implementation module."""

from typing import Optional, Union

from pydantic import Field
from typing_extensions import Annotated, Literal

from edgedet.configbase import Strict


class FileSource(Strict):
    """A video file (or a single image), looped or played once."""

    type: Literal["file"]
    path: str
    loop: bool = True
    # realtime: paced at the file's frame rate, like a camera; fast: as fast as the pipeline takes frames
    pace: Literal["realtime", "fast"] = "realtime"


class V4l2Source(Strict):
    """A USB/V4L2 camera by device path (/dev/video0) or index."""

    type: Literal["v4l2"]
    device: Union[int, str] = 0
    width: Optional[int] = Field(default=None, gt=0)
    height: Optional[int] = Field(default=None, gt=0)
    fps: Optional[float] = Field(default=None, gt=0)
    fourcc: Optional[str] = Field(default=None, min_length=4, max_length=4)


class RtspSource(Strict):
    """An RTSP camera; ffmpeg (OpenCV's FFMPEG backend) or gstreamer (hardware decode on Jetson)."""

    type: Literal["rtsp"]
    url: str = Field(pattern=r"^rtsps?://")
    transport: Literal["tcp", "udp"] = "tcp"
    decoder: Literal["auto", "ffmpeg", "gstreamer"] = "auto"
    latency_ms: int = Field(default=200, ge=0)
    codec: Literal["h264", "h265"] = "h264"
    # give up opening when the camera has not delivered a stream within this many seconds
    open_timeout_s: float = Field(default=10.0, gt=0)
    # a read that gets no data for this long fails (the stream is then reopened with backoff)
    read_timeout_s: float = Field(default=5.0, gt=0)


class GstreamerSource(Strict):
    """A raw GStreamer pipeline ending in an appsink that delivers BGR frames."""

    type: Literal["gstreamer"]
    pipeline: str = Field(min_length=1)


class CsiSource(Strict):
    """A CSI camera through nvarguscamerasrc (Jetson only)."""

    type: Literal["csi"]
    sensor_id: int = Field(default=0, ge=0)
    width: int = Field(default=1920, gt=0)
    height: int = Field(default=1080, gt=0)
    fps: int = Field(default=30, gt=0)
    flip_method: int = Field(default=0, ge=0, le=7)


SourceConfig = Annotated[
    Union[FileSource, V4l2Source, RtspSource, GstreamerSource, CsiSource], Field(discriminator="type")
]


class ReconnectConfig(Strict):
    """Capped exponential backoff between attempts to reopen a dead source."""

    initial_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1.0)


class CameraConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    source: SourceConfig
    enabled: bool = True
    # a source that delivers no frame for this long is declared stalled and reopened
    stall_timeout_s: float = Field(default=10.0, gt=0)
    reconnect: ReconnectConfig = ReconnectConfig()
    # process at most this many frames per second (None: as many as arrive)
    max_fps: Optional[float] = Field(default=None, gt=0)
