"""What a valid config points to, checked before anything starts: files, devices, OpenCV's GStreamer.

``check_references(config)`` returns findings; ``error`` ones are fatal (the daemon refuses to start,
``edgedet check-config`` fails, a reload is refused), ``warning`` ones are conditions that may heal on their
own (a USB camera not plugged in yet: the daemon retries it). Network cameras are never checked here:
a camera that is not up yet is a transient state, not a configuration error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from edgedet.config import Config
from edgedet.errors import DependencyError
from edgedet.sources.base import load_cv2, opencv_has_gstreamer, opencv_origin
from edgedet.sources.config import CsiSource, FileSource, GstreamerSource, V4l2Source
from edgedet.sources.v4l2 import device_path

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    where: str  # the config setting, e.g. "cameras[front].source.path"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def _readable_file(path: Path) -> Optional[str]:
    """None when ``path`` is a readable file, else what is wrong."""
    if not path.exists():
        return f"{path}: no such file"
    if path.is_dir():
        return f"{path}: is a folder, not a file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable by this user"
    return None


def _readable_file_or_folder(path: Path) -> Optional[str]:
    if not path.exists():
        return f"{path}: no such file or folder"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable by this user"
    return None


class _Checks:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.findings: List[Finding] = []
        self._cv2: Any = None
        self._cv2_problem: Optional[str] = None

    def add(self, severity: str, where: str, problem: Optional[str]) -> None:
        if problem is not None:
            self.findings.append(Finding(severity, where, problem))

    def file(self, where: str, value: Optional[str], folder_ok: bool = False) -> None:
        if value is None:
            return
        path = self.config.resolve_path(value)
        check = _readable_file_or_folder if folder_ok else _readable_file
        self.add(ERROR, where, check(path))

    def opencv(self, what: str) -> Any:
        if self._cv2 is None and self._cv2_problem is None:
            try:
                self._cv2 = load_cv2(what)
            except DependencyError as exc:
                self._cv2_problem = str(exc)
        return self._cv2

    def model(self) -> None:
        cfg = self.config
        self.file("model.path", cfg.model.path)
        if isinstance(cfg.model.labels, str):
            self.file("model.labels", cfg.model.labels)
        backend = cfg.backend
        for name in ("engine", "qdq_model", "fp16_model", "float_layers"):
            self.file(f"backend.{name}", getattr(backend, name, None))
        self.file("backend.calibration", getattr(backend, "calibration", None), folder_ok=True)

    def cameras(self) -> None:
        for camera in self.config.cameras:
            if not camera.enabled:
                continue
            where = f"cameras[{camera.name}].source"
            source = camera.source
            if isinstance(source, FileSource):
                self.file(f"{where}.path", source.path)
            elif isinstance(source, V4l2Source):
                device = device_path(source.device)
                node = f"/dev/video{device}" if isinstance(device, int) else device
                if not os.path.exists(node):
                    # a USB camera plugged in later is picked up by the retries: not fatal
                    self.add(WARNING, f"{where}.device", f"{node} does not exist (yet); it will be retried")
            elif isinstance(source, (GstreamerSource, CsiSource)):
                self._gstreamer(where, source.type)

    def _gstreamer(self, where: str, kind: str) -> None:
        cv2 = self.opencv(f"the {kind} source")
        if cv2 is None:
            self.add(ERROR, where, self._cv2_problem)
        elif not opencv_has_gstreamer(cv2):
            self.add(
                ERROR,
                where,
                f"a {kind} source needs OpenCV built with GStreamer, but {opencv_origin(cv2)} has none "
                "(pip's opencv-python wheels never do; on a Jetson use JetPack's system OpenCV)",
            )

    def mqtt(self) -> None:
        mqtt = self.config.mqtt
        if not mqtt.enabled:
            return
        if mqtt.tls is not None:
            for name in ("ca_file", "cert_file", "key_file"):
                self.file(f"mqtt.tls.{name}", getattr(mqtt.tls, name))
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir and not os.environ.get(mqtt.password_env):
            path = Path(cred_dir) / mqtt.password_credential
            if path.exists():
                self.add(ERROR, "mqtt.password_credential", _readable_file(path))


def check_references(config: Config) -> List[Finding]:
    """Every problem with what ``config`` points to (files, devices, OpenCV), errors first."""
    checks = _Checks(config)
    checks.model()
    checks.cameras()
    checks.mqtt()
    return sorted(checks.findings, key=lambda f: f.severity != ERROR)


def errors(findings: List[Finding]) -> List[Finding]:
    return [f for f in findings if f.severity == ERROR]
