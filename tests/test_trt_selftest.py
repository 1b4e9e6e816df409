"""The pure parts of tools/jetson_selftest.py: L4T/JetPack detection and OpenCV's GStreamer flag."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def selftest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("jetson_selftest", REPO / "tools" / "jetson_selftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("line", "l4t", "jetpack"),
    [
        (
            "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1",
            (35, 4, 1),
            "5.1.x",
        ),
        ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64", (36, 3, 0), "6.0"),
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
            (36, 4, 3),
            "6.1 / 6.2",
        ),
        ("# R38 (release), REVISION: 2.0, GCID: 40000000, BOARD: generic, EABI: aarch64", (38, 2, 0), "7.x"),
    ],
)
def test_l4t_to_jetpack(selftest, line: str, l4t: tuple, jetpack: str) -> None:  # type: ignore[no-untyped-def]
    assert selftest.parse_tegra_release(line) == l4t
    assert selftest.jetpack_for(l4t) == jetpack


def test_unknown_release(selftest) -> None:  # type: ignore[no-untyped-def]
    assert selftest.parse_tegra_release("garbage") is None
    assert selftest.jetpack_for((32, 7, 4)).startswith("unknown")


def test_opencv_gstreamer_flag(selftest) -> None:  # type: ignore[no-untyped-def]
    cv2 = pytest.importorskip("cv2")
    info = cv2.getBuildInformation()
    assert selftest.opencv_gstreamer(info) in (True, False)  # pip's wheel: False; JetPack's: True
    assert selftest.opencv_gstreamer("    GStreamer:                   YES (1.20.3)\n") is True
    assert selftest.opencv_gstreamer("    GStreamer:                   NO\n") is False
    assert selftest.opencv_gstreamer("no video section") is None
