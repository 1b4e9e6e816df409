"""The one YAML configuration file: typed, strict, and with errors pointing at YAML lines.

Sections live beside the code they configure (sources/config.py, backends/config.py ...); this module
composes them and does the loading. Parsing (``parse_config``) is apart from file I/O (``load_config``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from typing_extensions import Literal

from edgedet.backends.config import BackendConfig, OnnxRuntimeBackend, PreprocessConfig
from edgedet.configbase import Strict
from edgedet.errors import ConfigError
from edgedet.models.config import ModelConfig
from edgedet.publish.config import MqttConfig
from edgedet.publish.homeassistant import HomeAssistantConfig
from edgedet.sources.config import CameraConfig
from edgedet.telemetry.config import TelemetryConfig
from edgedet.tracking.config import TrackingConfig


class StatsConfig(Strict):
    interval_s: float = Field(default=10.0, gt=0)


class ServiceConfig(Strict):
    # the watchdog is pinged only while every stage has shown progress within this many seconds
    heartbeat_timeout_s: float = Field(default=15.0, gt=0)
    # how long a stop may take to flush in-flight frames and the outbox
    stop_timeout_s: float = Field(default=10.0, gt=0)


DEFAULT_LISTEN = "127.0.0.1:9464"  # loopback: nothing is exposed to the network unless the file says so


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP literal, without brackets
    port: int  # 0: any free port (tests)
    family: int  # socket.AF_INET or socket.AF_INET6

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL: IPv6 literals in brackets."""
        return f"[{self.host}]" if self.family == socket.AF_INET6 else self.host


def parse_listen(text: str) -> ListenAddress:
    """``"127.0.0.1:9464"``, ``"0.0.0.0:9464"``, ``"[::1]:9464"`` or ``"[::]:9464"``; raises ValueError.

    Only IP literals: a host name could resolve to several addresses, and the listener must bind exactly
    where the file says (loopback by default, so the endpoints are never exposed by accident).
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: an IPv6 address needs the form [addr]:port, e.g. [::1]:9464")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected host:port, e.g. 127.0.0.1:9464")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0, [::1] or [::])"
        ) from None
    if address.version == 6 and not text.startswith("["):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return ListenAddress(str(address), int(port), family)


class HttpConfig(Strict):
    """Prometheus /metrics, /healthz, /readyz and /status over HTTP (no authentication: keep it local)."""

    enabled: bool = True
    listen: str = Field(default=DEFAULT_LISTEN)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)


class Config(Strict):
    version: Literal[1] = 1
    device_id: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # engines, calibration caches, outbox, sequence numbers
    state_dir: str = "~/.local/state/edgedet"
    model: ModelConfig
    backend: BackendConfig = OnnxRuntimeBackend(type="onnxruntime")
    preprocess: PreprocessConfig = PreprocessConfig()
    cameras: List[CameraConfig] = Field(min_length=1)
    mqtt: MqttConfig = MqttConfig()
    # tracker, object events, snapshots; zones and lines per camera name
    tracking: TrackingConfig = TrackingConfig()
    stats: StatsConfig = StatsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    service: ServiceConfig = ServiceConfig()
    http: HttpConfig = HttpConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()

    @model_validator(mode="after")
    def _unique_camera_names(self) -> Config:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique; repeated: {', '.join(dupes)}")
        unknown = sorted(set(self.tracking.cameras) - set(names))
        if unknown:
            raise ValueError(f"tracking.cameras names no configured camera: {', '.join(unknown)}")
        return self

    @property
    def resolved_device_id(self) -> str:
        return self.device_id or socket.gethostname().split(".")[0]

    def resolve_path(self, path: str) -> Path:
        """Paths in the file are relative to the file's folder (recorded at load time)."""
        p = Path(os.path.expanduser(path))
        if not p.is_absolute() and self._base_dir is not None:
            p = self._base_dir / p
        return p

    @property
    def state_path(self) -> Path:
        # under systemd, StateDirectory= tells where state belongs unless the file says otherwise
        if "state_dir" not in self.model_fields_set and os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return self.resolve_path(self.state_dir)

    @property
    def cache_path(self) -> Path:
        """Disposable caches (compiled CUDA kernels): systemd's CacheDirectory=, else <state_dir>/cache."""
        if os.environ.get("CACHE_DIRECTORY"):
            return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
        return self.state_path / "cache"

    _base_dir: Optional[Path] = None


Line = Optional[int]
_LocMap = Dict[Tuple[Any, ...], int]


def _yaml_lines(node: yaml.Node, path: Tuple[Any, ...], out: _LocMap) -> None:
    """Record the 1-based line of every mapping key and sequence item, keyed by its path."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _yaml_lines(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, path + (i,), out)


def _line_for(loc: Tuple[Any, ...], lines: _LocMap) -> Line:
    # pydantic inserts union tags (e.g. "file") into loc; drop parts until a known path is found
    parts = list(loc)
    while parts:
        key = tuple(parts)
        if key in lines:
            return lines[key]
        known = tuple(p for p in parts if not isinstance(p, str) or p not in _UNION_TAGS)
        if known in lines:
            return lines[known]
        parts.pop()
    return lines.get((), None)


_UNION_TAGS = {"file", "v4l2", "rtsp", "gstreamer", "csi", "onnxruntime", "tensorrt", "python"}


def _describe(err: Dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if str(p) not in _UNION_TAGS)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not a setting edgedet knows; check spelling and indentation)"
    elif err["type"] == "missing":
        msg = "required setting is missing"
    return f"{loc or '<top>'}: {msg}"


def parse_config(text: str, source: str = "<config>", base_dir: Optional[Path] = None) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from exc
    if root is None or data is None:
        raise ConfigError(f"{source}: the file is empty; see config/edgedet.yaml for an example")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of settings")
    lines: _LocMap = {}
    _yaml_lines(root, (), lines)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line = _line_for(tuple(err["loc"]), lines)
            where = f"{source}:{line}" if line is not None else source
            problems.append(f"{where}: {_describe(dict(err))}")
        summary = f"{source}: {len(problems)} problem(s) in the configuration"
        raise ConfigError(summary + "\n" + "\n".join(problems), problems) from exc
    object.__setattr__(config, "_base_dir", base_dir)
    return config


def load_config(path: str | Path) -> Config:
    """Read and parse a config file; a missing or unreadable file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc}") from exc
    return parse_config(text, source=str(p), base_dir=p.resolve().parent)
