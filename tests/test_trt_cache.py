"""Engine cache keys, invalidation, atomic writes and fallbacks (pure: no TensorRT)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from edgedet.assets import DEMO_MODEL
from edgedet.backends.tensorrt.cache import (
    CalibrationKey,
    EngineCache,
    EngineKey,
    atomic_write_bytes,
    describe_changes,
    file_sha256,
    read_platform_model,
)


def _key(**changes: object) -> EngineKey:
    base = EngineKey(
        onnx_sha256=file_sha256(DEMO_MODEL),
        precision="fp16",
        trt_version="8.6.2",
        device_name="Orin",
        compute_capability="8.7",
        platform="NVIDIA Jetson AGX Orin Developer Kit",
        input_shapes=(),
        batch_range=(1, 4, 4),
        profiles=2,
        dla_core=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_sha_of_the_real_model_is_stable_and_sensitive(tmp_path: Path) -> None:
    sha = file_sha256(DEMO_MODEL)
    assert len(sha) == 64 and sha == file_sha256(DEMO_MODEL)
    copy = tmp_path / "m.onnx"
    data = bytearray(DEMO_MODEL.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(data))
    assert file_sha256(copy) != sha


def test_key_digest_round_trip_and_file_name() -> None:
    key = _key()
    again = EngineKey.from_dict(json.loads(json.dumps(key.to_dict())))
    assert again == key and again.digest() == key.digest()
    stem = key.file_stem("yolox_nano.onnx")
    assert stem.startswith("yolox_nano-fp16-b1-4-trt8.6.2-sm87-") and stem.endswith(key.digest()[:12])
    assert "dla" in _key(dla_core=1).file_stem("m.onnx")
    with pytest.raises(ValueError):
        EngineKey.from_dict({"precision": "fp16"})


@pytest.mark.parametrize(
    ("change", "label"),
    [
        ({"onnx_sha256": "0" * 64}, "model file"),
        ({"precision": "int8"}, "precision"),
        ({"trt_version": "10.3.0"}, "TensorRT version"),
        ({"device_name": "Xavier"}, "GPU"),
        ({"compute_capability": "7.2"}, "compute capability"),
        ({"batch_range": (1, 1, 1)}, "batch range"),
        ({"input_shapes": (("image_size", (640, 640)),)}, "input shapes"),
        ({"dla_core": 0}, "DLA core"),
        ({"options": "abc"}, "build options"),
    ],
)
def test_every_field_changes_the_key(change: dict, label: str) -> None:
    old, new = _key(), _key(**change)
    assert old.digest() != new.digest()
    assert old.file_stem("m.onnx") != new.file_stem("m.onnx")
    reasons = describe_changes(old, new)
    assert len(reasons) == 1 and reasons[0].startswith(label)
    assert describe_changes(old, _key()) == []


def test_store_find_and_metadata_guard(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = _key()
    assert cache.find(key, "yolox_nano.onnx") is None
    path = cache.store(key, "yolox_nano.onnx", b"engine-bytes", {"build_seconds": 12.5})
    assert path.read_bytes() == b"engine-bytes"
    assert cache.find(key, "yolox_nano.onnx") == path
    meta = json.loads(cache.meta_path(path).read_text())
    assert meta["key"] == key.to_dict() and meta["build_seconds"] == 12.5
    assert cache.find(_key(trt_version="10.3.0"), "yolox_nano.onnx") is None  # a TensorRT upgrade rebuilds
    # an engine without (or with foreign) metadata is not trusted
    cache.meta_path(path).write_text("{}")
    assert cache.find(key, "yolox_nano.onnx") is None
    cache.meta_path(path).unlink()
    assert cache.find(key, "yolox_nano.onnx") is None
    assert not list(tmp_path.rglob("*.tmp"))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a" / "engine.bin"
    atomic_write_bytes(target, b"good")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"good"
    assert [p.name for p in target.parent.iterdir()] == ["engine.bin"]


def test_last_good_pointer_and_compatibility(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    old = _key(onnx_sha256="1" * 64)
    path = cache.store(old, "yolox_nano.onnx", b"v1")
    cache.mark_good(old, "yolox_nano.onnx", path)
    wanted = _key()  # a new model file: its build may fail, the old engine still runs here
    found = cache.last_good("yolox_nano.onnx", "fp16", wanted)
    assert found is not None and found[0] == path and found[1] == old
    assert describe_changes(found[1], wanted)[0].startswith("model file")
    # after a TensorRT upgrade or on another GPU the old engine cannot run: no fallback
    assert cache.last_good("yolox_nano.onnx", "fp16", _key(trt_version="10.3.0")) is None
    assert cache.last_good("yolox_nano.onnx", "fp16", _key(compute_capability="7.2")) is None
    assert cache.last_good("yolox_nano.onnx", "int8", wanted) is None
    path.unlink()
    assert cache.last_good("yolox_nano.onnx", "fp16", wanted) is None


def test_prune_keeps_newest_and_the_current_engine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    paths = []
    for i in range(5):
        key = _key(onnx_sha256=str(i) * 64)
        p = cache.store(key, "yolox_nano.onnx", b"x")
        os.utime(p, (1000 + i, 1000 + i))
        paths.append((key, p))
    cache.mark_good(paths[0][0], "yolox_nano.onnx", paths[0][1])  # the oldest is the one running
    cache.store(_key(), "other.onnx", b"y")
    removed = cache.prune("yolox_nano.onnx", keep=2)
    left = {p.name for p in cache.engines_for("yolox_nano.onnx")}
    assert {paths[4][1].name, paths[3][1].name, paths[0][1].name} == left
    assert {p.name for p in removed} == {paths[1][1].name, paths[2][1].name}
    assert not cache.meta_path(paths[1][1]).exists()
    assert cache.engines_for("other.onnx")


def test_calibration_cache_keyed_by_model_version_and_shape(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = CalibrationKey("a" * 64, "8.6.2", (8, 3, 416, 416), "entropy2", "data1", "pre1")
    assert cache.read_calibration(key, "m.onnx") is None
    cache.write_calibration(key, "m.onnx", b"TRT-8602-EntropyCalibration2\nimages: 3c010a14\n")
    assert cache.read_calibration(key, "m.onnx").startswith(b"TRT-8602")  # type: ignore[union-attr]
    for other in (
        dataclasses.replace(key, trt_version="10.3.0"),
        dataclasses.replace(key, input_shape=(1, 3, 416, 416)),
        dataclasses.replace(key, onnx_sha256="b" * 64),
        dataclasses.replace(key, data_id="data2"),
        dataclasses.replace(key, preprocess_id="pre2"),
    ):
        assert cache.read_calibration(other, "m.onnx") is None


def test_timing_cache_path_per_version_and_gpu(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path("8.6.2", "Orin", "8.7")
    assert a.parent == tmp_path / "timing" and a.name == "trt8.6.2-Orin-sm87.cache"
    assert a != cache.timing_cache_path("10.3.0", "Orin", "8.7")
    assert a != cache.timing_cache_path("8.6.2", "Xavier", "7.2")


def test_platform_model_from_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert read_platform_model(model) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert read_platform_model(tmp_path / "missing") == ""
