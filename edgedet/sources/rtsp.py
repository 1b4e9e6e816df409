"""An RTSP camera: OpenCV's FFMPEG backend over TCP, or a GStreamer pipeline with hardware decoding.

``decoder: auto`` takes GStreamer (nvv4l2decoder) only on a Jetson whose OpenCV has GStreamer; everywhere
else FFMPEG. Before handing the URL to a decoder, a plain TCP connect tells "nothing listens" and "no
answer" apart from "answers but sends no video", so the error says which.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Dict, Iterator, Tuple
from urllib.parse import urlsplit

from edgedet.errors import SourceError
from edgedet.sources.base import (
    CvCaptureReader,
    is_jetson,
    opencv_has_gstreamer,
    redact_url,
    require_gstreamer,
)
from edgedet.sources.config import RtspSource

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}


class _FfmpegOptions:
    """OpenCV reads its FFMPEG options from one process-wide environment variable when a capture opens.

    Opens that want the same value run concurrently (the common case: every camera over TCP); an open
    that wants another value waits until the others have finished opening.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: Any = None
        self._active = 0

    def using(self, transport: str) -> _Using:
        return _Using(self, transport)

    def _enter(self, transport: str) -> None:
        with self._cond:
            current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
            # keep options a user put there themselves, replace only the transport
            kept = [opt for opt in current.split("|") if opt and not opt.startswith("rtsp_transport;")]
            wanted = "|".join([*kept, f"rtsp_transport;{transport}"])
            while self._active and self._value != wanted:
                self._cond.wait()
            os.environ[FFMPEG_OPTIONS_ENV] = wanted
            self._value = wanted
            self._active += 1

    def _exit(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()


class _Using:
    def __init__(self, owner: _FfmpegOptions, transport: str) -> None:
        self.owner = owner
        self.transport = transport

    def __enter__(self) -> None:
        self.owner._enter(self.transport)

    def __exit__(self, *exc: object) -> None:
        self.owner._exit()


_OPTIONS = _FfmpegOptions()


def host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise SourceError(f"RTSP {redact_url(url)}: bad port in the URL") from exc
    host = parts.hostname
    if not host:
        raise SourceError(f"RTSP {redact_url(url)}: no host in the URL")
    return host, port or DEFAULT_PORTS.get(parts.scheme.lower(), 554)


def gstreamer_pipeline(cfg: RtspSource, jetson: bool) -> str:
    """The pipeline for this camera: hardware decoding (nvv4l2decoder) on a Jetson, avdec elsewhere."""
    codec = cfg.codec
    location = cfg.url.replace("\\", "\\\\").replace('"', '\\"')
    tcp_timeout_us = int(cfg.read_timeout_s * 1_000_000)
    if jetson:
        decode = "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
    else:
        decode = f"avdec_{codec} ! videoconvert ! video/x-raw,format=BGR"
    return (
        f'rtspsrc location="{location}" latency={cfg.latency_ms} protocols={cfg.transport} '
        f"tcp-timeout={tcp_timeout_us} ! rtp{codec}depay ! {codec}parse ! {decode} ! "
        "appsink drop=1 max-buffers=1 sync=false"
    )


class RtspReader(CvCaptureReader):
    def __init__(self, cfg: RtspSource) -> None:
        self.cfg = cfg
        self.decoder: str = cfg.decoder  # resolved to "ffmpeg" or "gstreamer" by open()
        super().__init__(f"RTSP {redact_url(cfg.url)}")

    def choose_decoder(self, cv2: Any) -> str:
        if self.cfg.decoder == "gstreamer":
            require_gstreamer(cv2, f"{self.description} with decoder: gstreamer")
            return "gstreamer"
        if self.cfg.decoder == "auto" and is_jetson() and opencv_has_gstreamer(cv2):
            return "gstreamer"
        return "ffmpeg"

    def _open_capture(self, cv2: Any) -> Any:
        self.decoder = self.choose_decoder(cv2)
        host, port = host_port(self.cfg.url)
        self._probe(host, port)
        cap = self._open_gstreamer(cv2) if self.decoder == "gstreamer" else self._open_ffmpeg(cv2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.description}: {host}:{port} accepts connections but delivered no video within "
                f"{self.cfg.open_timeout_s:g} s ({self.decoder}; wrong path or credentials, or an "
                "unsupported codec)"
            )
        log.info("%s: opened with %s over %s", self.description, self.decoder, self.cfg.transport)
        return cap

    def _probe(self, host: str, port: int) -> None:
        where = f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=self.cfg.open_timeout_s):
                pass
        except socket.gaierror as exc:
            raise SourceError(f"{self.description}: cannot resolve host {host!r} ({exc})") from exc
        except ConnectionRefusedError as exc:
            raise SourceError(
                f"{self.description}: connection refused by {where} (camera offline or wrong port)"
            ) from exc
        except socket.timeout as exc:
            raise SourceError(
                f"{self.description}: no answer from {where} within {self.cfg.open_timeout_s:g} s "
                "(camera offline, wrong address, or a firewall)"
            ) from exc
        except OSError as exc:
            raise SourceError(f"{self.description}: cannot connect to {where}: {exc}") from exc

    def _ffmpeg_params(self, cv2: Any) -> Iterator[int]:
        timeouts: Dict[str, float] = {
            "CAP_PROP_OPEN_TIMEOUT_MSEC": self.cfg.open_timeout_s,
            "CAP_PROP_READ_TIMEOUT_MSEC": self.cfg.read_timeout_s,
        }
        for name, seconds in timeouts.items():
            prop = getattr(cv2, name, None)  # OpenCV >= 4.6; older builds wait up to 30 s
            if prop is not None:
                yield int(prop)
                yield int(seconds * 1000)

    def _open_ffmpeg(self, cv2: Any) -> Any:
        params = list(self._ffmpeg_params(cv2))
        try:
            with _OPTIONS.using(self.cfg.transport):
                if params:
                    return cv2.VideoCapture(self.cfg.url, cv2.CAP_FFMPEG, params)
                return cv2.VideoCapture(self.cfg.url, cv2.CAP_FFMPEG)
        except Exception as exc:  # cv2.error on some builds instead of isOpened() == False
            raise SourceError(f"{self.description}: cannot open with ffmpeg: {exc}") from exc

    def _open_gstreamer(self, cv2: Any) -> Any:
        pipeline = gstreamer_pipeline(self.cfg, jetson=is_jetson())
        log.debug("%s: GStreamer pipeline %s", self.description, redact_url(pipeline))
        try:
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        except Exception as exc:
            raise SourceError(f"{self.description}: cannot open the GStreamer pipeline: {exc}") from exc
