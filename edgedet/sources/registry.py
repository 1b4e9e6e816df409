"""Pick the reader module by the config's ``type``; modules (and OpenCV) load only when used."""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

from edgedet.errors import SourceError
from edgedet.sources.base import FrameReader

_READERS: Dict[str, Tuple[str, str]] = {
    "file": ("edgedet.sources.file", "FileReader"),
    "v4l2": ("edgedet.sources.v4l2", "V4l2Reader"),
    "rtsp": ("edgedet.sources.rtsp", "RtspReader"),
    "gstreamer": ("edgedet.sources.gstreamer", "GstreamerReader"),
    "csi": ("edgedet.sources.csi", "CsiReader"),
}


def open_reader(cfg: Any) -> FrameReader:
    """A new, not yet opened reader for a source config (FileSource, RtspSource ...).

    No I/O happens here: call ``open()`` on the result (the capture worker does, in its reader thread).
    """
    kind = getattr(cfg, "type", None)
    entry = _READERS.get(str(kind))
    if entry is None:
        raise SourceError(f"unknown source type {kind!r} (known: {', '.join(sorted(_READERS))})")
    module_name, class_name = entry
    reader_cls = getattr(importlib.import_module(module_name), class_name)
    return reader_cls(cfg)  # type: ignore[no-any-return]
