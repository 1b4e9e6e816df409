"""Shared fixtures: paths to ../shared assets (skipped with a reason when absent) and a real broker."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.broker import Mosquitto
from tests.support.fake_tensorrt import Installed, install

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "README.md").exists():
        pytest.skip(f"../shared is not laid beside the clone ({SHARED}); CI provides it")
    return SHARED


@pytest.fixture(scope="session")
def coco_mini(shared_dir: Path) -> Path:
    return shared_dir / "data" / "coco-val2017-mini"


@pytest.fixture(scope="session")
def video_1080p(shared_dir: Path) -> Path:
    return shared_dir / "data" / "video" / "vtest_1080p.mp4"


def _need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (.ci/run installs it with apt)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh anonymous broker on a free port, stopped after the test."""
    _need_mosquitto()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[object]:
    """Build brokers with custom settings (persistence, TLS, passwords); all are stopped afterwards."""
    _need_mosquitto()
    made: list = []

    def make(**kwargs: object) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for b in made:
            b.stop()


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[object]:
    """A real MQTT client recording everything under edgedet/<test device>/# (see daemon_harness)."""
    from tests.support.daemon_harness import Subscriber

    sub = Subscriber(mosquitto)
    yield sub
    sub.close()


@pytest.fixture
def trt10(monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    """The TensorRT double of the 10.x line, importable as ``tensorrt`` for one test."""
    yield install(monkeypatch, "10.3.0")
