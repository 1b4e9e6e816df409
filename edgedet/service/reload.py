"""Which stages a configuration change restarts (pure: two validated Configs in, a plan out).

Stages and what restarts them:

* a capture stage per enabled camera, by name: added, removed (or disabled), changed (any of its
  settings). Preprocessing runs in the capture thread and writes straight into the model's input
  buffer, so every capture restarts when preprocessing changes: the model's preprocessing settings or
  model file, ``preprocess``, or the backend type (``preprocess: auto`` picks cuda or cpu from it). A
  backend or model change may also change the input spec (size, dtype) that only the loaded model
  knows: after loading it, call ``captures_must_restart(plan, old_spec, new_spec)``;
* inference (backend + decoder, and the tracking stage after it): ``model``, ``backend``,
  ``preprocess``, ``state_dir`` (engine cache), ``tracking``, ``mqtt.events``;
* the MQTT publisher: ``mqtt``, ``device_id`` (topics, client id), ``state_dir`` (outbox);
* telemetry: ``telemetry``;
* in place, no restart: ``log_level``, ``stats``, ``service``, ``http``, ``homeassistant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from edgedet.config import Config
from edgedet.sources.config import CameraConfig
from edgedet.types import InputSpec

# model settings that change what preprocessing writes into the input tensor
_PREPROCESS_MODEL_FIELDS = (
    "path",
    "family",
    "channel_order",
    "scale",
    "mean",
    "std",
    "letterbox_center",
    "pad_value",
)


@dataclass(frozen=True)
class ReloadPlan:
    cameras_added: Tuple[str, ...] = ()
    cameras_removed: Tuple[str, ...] = ()
    cameras_changed: Tuple[str, ...] = ()
    restart_all_captures: bool = False
    restart_inference: bool = False
    restart_publisher: bool = False
    restart_telemetry: bool = False
    in_place: Tuple[str, ...] = ()  # top-level sections applied without a restart

    @property
    def changed(self) -> bool:
        return bool(
            self.cameras_added
            or self.cameras_removed
            or self.cameras_changed
            or self.restart_all_captures
            or self.restart_inference
            or self.restart_publisher
            or self.restart_telemetry
            or self.in_place
        )

    @property
    def cameras_to_stop(self) -> Tuple[str, ...]:
        """Capture stages to stop when inference stays (removed or changed cameras)."""
        return tuple(sorted(self.cameras_removed + self.cameras_changed))

    @property
    def cameras_to_start(self) -> Tuple[str, ...]:
        """Capture stages to (re)start when inference stays (added or changed cameras)."""
        return tuple(sorted(self.cameras_added + self.cameras_changed))

    @property
    def log_level_changed(self) -> bool:
        return "log_level" in self.in_place

    def captures_to_restart(self, new: Config) -> Tuple[str, ...]:
        """Names of the new config's enabled cameras whose capture stage must be (re)started."""
        if self.restart_all_captures:
            return tuple(c.name for c in new.cameras if c.enabled)
        return tuple(sorted(self.cameras_added + self.cameras_changed))

    def summary(self) -> str:
        """One line for the log and STATUS: what the reload does."""
        parts = []
        if self.cameras_added:
            parts.append("cameras added: " + ", ".join(self.cameras_added))
        if self.cameras_removed:
            parts.append("cameras removed: " + ", ".join(self.cameras_removed))
        if self.restart_all_captures:
            parts.append("all captures restart")
        elif self.cameras_changed:
            parts.append("cameras restarted: " + ", ".join(self.cameras_changed))
        for flag, name in (
            (self.restart_inference, "inference"),
            (self.restart_publisher, "publisher"),
            (self.restart_telemetry, "telemetry"),
        ):
            if flag:
                parts.append(f"{name} restarts")
        if self.in_place:
            parts.append("applied in place: " + ", ".join(self.in_place))
        return "; ".join(parts) if parts else "no change"

    describe = summary


def _active_cameras(config: Config) -> Dict[str, CameraConfig]:
    return {c.name: c for c in config.cameras if c.enabled}


def _dump(value: Any) -> Any:
    # compare plain data: pydantic models with equal fields compare equal whatever their origin
    return value.model_dump() if hasattr(value, "model_dump") else value


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The stages that must restart to go from ``old`` to ``new`` (both already validated)."""
    old_cams, new_cams = _active_cameras(old), _active_cameras(new)
    added = tuple(sorted(set(new_cams) - set(old_cams)))
    removed = tuple(sorted(set(old_cams) - set(new_cams)))
    changed = tuple(
        sorted(n for n in set(old_cams) & set(new_cams) if _dump(old_cams[n]) != _dump(new_cams[n]))
    )

    old_model, new_model = old.model.model_dump(), new.model.model_dump()
    model_changed = old_model != new_model
    preprocess_changed = (
        any(old_model[f] != new_model[f] for f in _PREPROCESS_MODEL_FIELDS)
        or _dump(old.preprocess) != _dump(new.preprocess)
        or old.backend.type != new.backend.type
    )
    backend_changed = _dump(old.backend) != _dump(new.backend)
    state_changed = old.state_path != new.state_path
    # the tracking stage (zones, lines, presence settings) is rebuilt with the pipeline
    tracking_changed = _dump(old.tracking) != _dump(new.tracking) or _dump(old.mqtt.events) != _dump(
        new.mqtt.events
    )

    in_place = tuple(
        name
        for name in ("log_level", "stats", "service", "http", "homeassistant")
        if _dump(getattr(old, name)) != _dump(getattr(new, name))
    )
    return ReloadPlan(
        cameras_added=added,
        cameras_removed=removed,
        cameras_changed=changed,
        restart_all_captures=preprocess_changed,
        restart_inference=(
            model_changed or backend_changed or preprocess_changed or state_changed or tracking_changed
        ),
        restart_publisher=(
            _dump(old.mqtt) != _dump(new.mqtt) or old.device_id != new.device_id or state_changed
        ),
        restart_telemetry=_dump(old.telemetry) != _dump(new.telemetry),
        in_place=in_place,
    )


def captures_must_restart(
    plan: ReloadPlan, old_spec: Optional[InputSpec], new_spec: Optional[InputSpec]
) -> bool:
    """After the new inference stage loaded: True when every capture must restart for its input spec."""
    if plan.restart_all_captures:
        return True
    return plan.restart_inference and old_spec != new_spec
