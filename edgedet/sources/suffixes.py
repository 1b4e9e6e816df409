"""Which files are still images and which are videos, by suffix: one answer for every stage that reads
files (the file source, `edgedet detect`, INT8 calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

# what cv2.imread decodes (the file source, detect and calibration all read images with it)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".jp2")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".ts", ".h264", ".h265", ".mjpeg")


def is_image(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
