"""The pure parts of tools/jetson_selftest.py: L4T/JetPack detection and OpenCV's GStreamer flag."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.fake_tensorrt import install

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


def _path_with(tmp_path: Path, **tools: Path) -> str:
    """A PATH whose first folder holds the given fake tools under their real names."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, target in tools.items():
        (folder / name).symlink_to(target)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def test_without_tensorrt_the_selftest_prints_the_install_hint(
    selftest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """Defect 9: with TensorRT missing, int("MISSING ...") raised ValueError and hid the hint."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert selftest.main(["--precisions", "fp16", "--skip-daemon"]) == 1
    out = capsys.readouterr().out
    assert "TensorRT is needed for every step: MISSING" in out and "python3-libnvinfer" in out


def test_selftest_measures_the_trade_against_trtexec_and_tegrastats(
    selftest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shared_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    """Every step of the self-test on the TensorRT double, with a fake trtexec (its documented output)
    and a fake tegrastats replaying recorded Orin lines on PATH."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("matplotlib")
    fake = install(monkeypatch, "10.3.0")
    support = REPO / "tests" / "support"
    monkeypatch.setenv(
        "PATH", _path_with(tmp_path, trtexec=support / "fake_trtexec", tegrastats=support / "fake_tegrastats")
    )
    monkeypatch.setenv("FAKE_TEGRASTATS_DEVICE", "Orin Nano")
    monkeypatch.setenv("FAKE_TEGRASTATS_COUNT", "0")
    monkeypatch.setattr(selftest, "TRTEXEC_DEFAULT", str(tmp_path / "no-such-trtexec"))
    mini = shared_dir / "data" / "coco-val2017-mini"
    plot = tmp_path / "trade.png"
    argv = [
        "--precisions", "fp32,fp16,int8", "--state-dir", str(tmp_path / "state"), "--skip-daemon",
        "--images", str(mini / "images"), "--annotations", str(mini / "instances_val2017_mini.json"),
        "--limit", "3",
        "--calibration", str(shared_dir / "data" / "coco-val2017-calib"), "--calibration-images", "4",
        "--frames", "12", "--plot", str(plot), "--json", str(tmp_path / "selftest.json"),
    ]  # fmt: skip
    assert selftest.main(argv) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "selftest.json").read_text())["results"]
    assert [r["precision"] for r in results] == ["fp32", "fp16", "int8"]
    for r in results:
        assert r["trtexec"]["fps"] == pytest.approx(93.46)
        assert r["ratio_to_trtexec"] == pytest.approx(r["pipeline"]["fps"] / 93.46)
        assert r["power_mw"] > 1000 and r["mj_per_frame"] == pytest.approx(
            r["power_mw"] / r["pipeline"]["fps"]
        )
        assert 0.0 <= r["map50_95"] <= 1.0
    assert "ratio" in out and "mJ/frame" in out and f"plot written: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fake.world.builds) == 3


def test_trtexec_throughput_is_read_from_its_summary(selftest) -> None:  # type: ignore[no-untyped-def]
    text = (
        "[11/30/2023-10:03:46] [I] === Performance summary ===\n"
        "[11/30/2023-10:03:46] [I] Throughput: 1093.79 qps\n"
    )
    assert selftest.parse_trtexec_throughput(text) == pytest.approx(1093.79)
    assert selftest.parse_trtexec_throughput("&&&& FAILED TensorRT.trtexec") is None
