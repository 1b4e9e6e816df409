"""Where built TensorRT engines, calibration caches and timing caches live, and when they are stale.

Pure Python (no TensorRT): an engine is valid only for the exact ONNX bytes, precision, TensorRT version,
GPU (name, compute capability, Jetson module), input shapes, batch range, optimization profiles, DLA
core and build options it was built with. All of that goes into an ``EngineKey``; its digest names the
file. Writes are atomic (temporary file, fsync, rename), so a crash or a full disk never leaves a
half-written engine where the daemon would load it. A pointer file remembers the last engine that
loaded fine, so a failed rebuild can fall back to it.

Layout under the state directory::

    engines/<model>-<precision>-b<min>-<max>-trt<version>-sm<cc>[-dla<n>]-<digest>.engine  (+ .json)
    engines/current-<model>-<precision>.json     the last good engine for this model and precision
    calibration/<model>-<digest>.calib  (+ .json)
    timing/trt<version>-<gpu>-sm<cc>.cache
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

log = logging.getLogger(__name__)

KEY_VERSION = 1  # bump when the meaning of a field changes: every cached engine is then rebuilt


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def text_digest(*parts: object) -> str:
    """A short stable digest of JSON-serialisable parts (for option lists, data identities)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def slug(text: str, limit: int = 40) -> str:
    """File-name-safe form of a model or GPU name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return (cleaned or "x")[:limit]


def read_platform_model(path: Path = Path("/proc/device-tree/model")) -> str:
    """The board model on Jetson ("NVIDIA Jetson AGX Orin Developer Kit"), "" elsewhere."""
    try:
        return path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:  # make the rename itself durable
        fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. Equal keys mean the cached engine can be reused."""

    onnx_sha256: str
    precision: str  # fp32 | fp16 | int8 | best
    trt_version: str  # e.g. "8.6.2", "10.3.0"
    device_name: str  # e.g. "Orin"
    compute_capability: str  # e.g. "8.7"
    platform: str  # Jetson module from the device tree; "" on a dGPU host
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]  # per input: name, shape without the batch axis
    batch_range: Tuple[int, int, int]  # min, opt, max
    profiles: int  # optimization profiles (one per in-flight slot for dynamic shapes)
    dla_core: Optional[int]
    options: str = ""  # digest of the rest: per-layer precisions, calibration data, Q/DQ or FP16 source
    key_version: int = KEY_VERSION

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shapes"] = [[name, list(shape)] for name, shape in self.input_shapes]
        data["batch_range"] = list(self.batch_range)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> EngineKey:
        try:
            return cls(
                onnx_sha256=str(data["onnx_sha256"]),
                precision=str(data["precision"]),
                trt_version=str(data["trt_version"]),
                device_name=str(data["device_name"]),
                compute_capability=str(data["compute_capability"]),
                platform=str(data.get("platform", "")),
                input_shapes=tuple(
                    (str(name), tuple(int(d) for d in shape)) for name, shape in data["input_shapes"]
                ),
                batch_range=(
                    int(data["batch_range"][0]),
                    int(data["batch_range"][1]),
                    int(data["batch_range"][2]),
                ),
                profiles=int(data["profiles"]),
                dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
                options=str(data.get("options", "")),
                key_version=int(data.get("key_version", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not an engine key: {exc}") from exc

    def digest(self) -> str:
        return text_digest(self.to_dict())

    def file_stem(self, model_name: str) -> str:
        cc = self.compute_capability.replace(".", "")
        parts = [
            slug(Path(model_name).stem),
            self.precision,
            f"b{self.batch_range[0]}-{self.batch_range[2]}",
            f"trt{slug(self.trt_version)}",
            f"sm{cc}",
        ]
        if self.dla_core is not None:
            parts.append(f"dla{self.dla_core}")
        parts.append(self.digest()[:12])
        return "-".join(parts)

    def runs_here(self, trt_version: str, device_name: str, compute_capability: str, platform: str) -> bool:
        """Whether an engine with this key can be deserialized by this TensorRT on this GPU."""
        return (
            self.trt_version == trt_version
            and self.device_name == device_name
            and self.compute_capability == compute_capability
            and self.platform == platform
        )


_FIELD_LABELS = {
    "onnx_sha256": "model file (sha256)",
    "precision": "precision",
    "trt_version": "TensorRT version",
    "device_name": "GPU",
    "compute_capability": "compute capability",
    "platform": "Jetson module",
    "input_shapes": "input shapes",
    "batch_range": "batch range",
    "profiles": "optimization profiles",
    "dla_core": "DLA core",
    "options": "build options (layer precisions, calibration data, Q/DQ or FP16 model)",
    "key_version": "engine cache format",
}


def describe_changes(old: EngineKey, new: EngineKey) -> List[str]:
    """Human-readable reasons why ``old`` does not serve for ``new`` (empty when equal)."""
    changes = []
    a, b = old.to_dict(), new.to_dict()
    for name, label in _FIELD_LABELS.items():
        if a.get(name) != b.get(name):
            before, after = a.get(name), b.get(name)
            if name == "onnx_sha256":
                before, after = str(before)[:12], str(after)[:12]
            changes.append(f"{label}: {before} -> {after}")
    return changes


@dataclass(frozen=True)
class CalibrationKey:
    """What an INT8 calibration cache depends on: the model, TensorRT, the input shape, the calibration
    algorithm, the calibration data and how it was preprocessed."""

    onnx_sha256: str
    trt_version: str
    input_shape: Tuple[int, ...]  # the batch shape fed to the calibrator
    algorithm: str  # "entropy2"
    data_id: str  # digest of the calibration source (files, sizes, count)
    preprocess_id: str  # digest of the InputSpec (channel order, scale, mean/std, letterbox)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def digest(self) -> str:
        return text_digest(self.to_dict())


class EngineCache:
    """The engines, calibration caches and timing caches under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.engines_dir = self.state_dir / "engines"
        self.calibration_dir = self.state_dir / "calibration"
        self.timing_dir = self.state_dir / "timing"

    # -- engines ---------------------------------------------------------------------------------
    def engine_path(self, key: EngineKey, model_name: str) -> Path:
        return self.engines_dir / (key.file_stem(model_name) + ".engine")

    def meta_path(self, engine: Path) -> Path:
        return engine.with_suffix(".json")

    def find(self, key: EngineKey, model_name: str) -> Optional[Path]:
        """The cached engine for exactly this key, or None (also when its metadata disagrees)."""
        path = self.engine_path(key, model_name)
        if not path.is_file():
            return None
        meta = read_json(self.meta_path(path))
        if meta is None or meta.get("key") != key.to_dict():
            log.warning("ignoring %s: its metadata is missing or does not match", path)
            return None
        return path

    def store(
        self, key: EngineKey, model_name: str, data: bytes, info: Optional[Dict[str, Any]] = None
    ) -> Path:
        """Write the engine and its metadata atomically (engine first: metadata marks it complete)."""
        path = self.engine_path(key, model_name)
        atomic_write_bytes(path, data)
        meta = {"key": key.to_dict(), "model": model_name, "created": time.time(), "bytes": len(data)}
        meta.update(info or {})
        atomic_write_json(self.meta_path(path), meta)
        return path

    def _pointer(self, model_name: str, precision: str) -> Path:
        return self.engines_dir / f"current-{slug(Path(model_name).stem)}-{precision}.json"

    def mark_good(self, key: EngineKey, model_name: str, engine: Path) -> None:
        """Remember ``engine`` as the last one that loaded for this model and precision."""
        atomic_write_json(
            self._pointer(model_name, key.precision),
            {"engine": engine.name, "key": key.to_dict(), "loaded": time.time()},
        )

    def last_good(
        self, model_name: str, precision: str, runtime_key: EngineKey
    ) -> Optional[Tuple[Path, EngineKey]]:
        """The last good engine for this model and precision, if this TensorRT and GPU can run it."""
        data = read_json(self._pointer(model_name, precision))
        if data is None:
            return None
        try:
            key = EngineKey.from_dict(data["key"])
            path = self.engines_dir / str(data["engine"])
        except (KeyError, ValueError):
            return None
        if not path.is_file():
            return None
        if not key.runs_here(
            runtime_key.trt_version,
            runtime_key.device_name,
            runtime_key.compute_capability,
            runtime_key.platform,
        ):
            return None
        return path, key

    def engines_for(self, model_name: str) -> List[Path]:
        prefix = slug(Path(model_name).stem) + "-"
        if not self.engines_dir.is_dir():
            return []
        return sorted(
            (p for p in self.engines_dir.glob("*.engine") if p.name.startswith(prefix)),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )

    def prune(self, model_name: str, keep: int, protect: Iterable[Path] = ()) -> List[Path]:
        """Delete all but the ``keep`` newest engines of this model (never a protected one)."""
        protected = {Path(p).name for p in protect}
        for pointer in self.engines_dir.glob(f"current-{slug(Path(model_name).stem)}-*.json"):
            data = read_json(pointer)
            if data and "engine" in data:
                protected.add(str(data["engine"]))
        removed = []
        for path in self.engines_for(model_name)[max(0, keep) :]:
            if path.name in protected:
                continue
            for victim in (path, self.meta_path(path)):
                with contextlib.suppress(FileNotFoundError):
                    victim.unlink()
            removed.append(path)
        return removed

    # -- calibration and timing caches ------------------------------------------------------------
    def calibration_path(self, key: CalibrationKey, model_name: str) -> Path:
        return self.calibration_dir / f"{slug(Path(model_name).stem)}-{key.digest()}.calib"

    def read_calibration(self, key: CalibrationKey, model_name: str) -> Optional[bytes]:
        path = self.calibration_path(key, model_name)
        meta = read_json(path.with_suffix(".json"))
        if meta is None or meta.get("key") != key.to_dict():
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def write_calibration(self, key: CalibrationKey, model_name: str, data: bytes) -> Path:
        path = self.calibration_path(key, model_name)
        atomic_write_bytes(path, data)
        atomic_write_json(path.with_suffix(".json"), {"key": key.to_dict(), "created": time.time()})
        return path

    def timing_cache_path(self, trt_version: str, device_name: str, compute_capability: str) -> Path:
        cc = compute_capability.replace(".", "")
        return self.timing_dir / f"trt{slug(trt_version)}-{slug(device_name)}-sm{cc}.cache"
