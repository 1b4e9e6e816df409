"""What the daemon shows to the tools around it: the HTTP endpoints and Home Assistant discovery.

The daemon builds one ``Observability`` with a ``DaemonView`` (callables: the latest status snapshot,
the watchdog's health verdict, the latest telemetry reading, the running model), passes ``observe`` as a
result sink to the pipeline, and calls ``attach``/``tick``/``reconfigure``/``stop`` from the supervisor. The
endpoints' answers (``liveness``, ``readiness``, ``status_document``) are pure functions of the snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from edgedet.app import Pipeline
from edgedet.config import Config, HttpConfig
from edgedet.publish.homeassistant_bridge import HomeAssistantBridge, withdraw
from edgedet.publish.messages import ModelInfo
from edgedet.publish.mqtt import MqttPublisher
from edgedet.service.http import Endpoints, HttpServer
from edgedet.service.metrics import make_registry
from edgedet.service.status import DaemonStatus
from edgedet.telemetry.base import TelemetryReader
from edgedet.telemetry.reading import Reading
from edgedet.tracking.values import TrackingUpdate
from edgedet.types import DetectionResult

log = logging.getLogger(__name__)

Verdict = Tuple[bool, str]


@dataclass(frozen=True)
class DaemonView:
    snapshot: Callable[[], Optional[DaemonStatus]]  # None until the pipeline is built
    health: Callable[[], Verdict]  # the verdict that gates systemd's watchdog pings
    reading: Callable[[], Optional[Reading]]
    model: Callable[[], Optional[ModelInfo]]  # the running pipeline's model; None before it is built


def latest_reading(reader: Optional[TelemetryReader]) -> Optional[Reading]:
    return None if reader is None else reader.latest()


def model_info(pipeline: Optional[Pipeline]) -> Optional[ModelInfo]:
    return None if pipeline is None else pipeline.model.model_info


def liveness(snap: Optional[DaemonStatus], health: Callable[[], Verdict]) -> Verdict:
    """/healthz: alive while starting and reloading (as the watchdog pinger sees it), else the heartbeats."""
    if snap is None:
        return True, "starting: loading the model"
    if snap.phase != "running":
        return True, snap.phase
    return health()


def readiness(snap: Optional[DaemonStatus]) -> Verdict:
    """/readyz: the model is loaded (a snapshot exists only then) and at least one camera streams."""
    if snap is None:
        return False, "not ready: starting (loading the model)"
    if snap.phase != "running":
        return False, f"not ready: {snap.phase}"
    up = snap.cameras_up
    model = f"{snap.model.name} on {snap.model.backend} {snap.model.precision}"
    if not up:
        down = "; ".join(
            f"{c.name} {c.state}" + (f" ({c.down_reason})" if c.down_reason else "") for c in snap.cameras
        )
        return False, f"not ready: no camera streaming ({down or 'no cameras'}); model {model}"
    names = ", ".join(c.name for c in up)
    return True, f"ready: {len(up)}/{len(snap.cameras)} cameras up ({names}); model {model}"


def status_document(snap: Optional[DaemonStatus]) -> Dict[str, Any]:
    """/status: the snapshot as JSON (``phase: starting`` alone before the first one)."""
    return {"phase": "starting"} if snap is None else snap.as_dict()


class Observability:
    def __init__(self, view: DaemonView) -> None:
        self.view = view
        self.registry, self.histograms, self.tracking = make_registry(view.snapshot, view.reading, view.model)
        self.http: Optional[HttpServer] = None
        self._http_cfg: Optional[HttpConfig] = None
        self.homeassistant: Optional[HomeAssistantBridge] = None
        self._ha_key: Optional[Tuple[Any, ...]] = None
        self._announced_at_connects: Optional[int] = None  # the publisher's connection count then
        self._attached: Optional[Tuple[Config, Optional[MqttPublisher]]] = None

    # -- HTTP ----------------------------------------------------------------------------------
    def start(self, config: Config) -> None:
        self._set_http(config.http)

    def _set_http(self, cfg: HttpConfig) -> None:
        if cfg == self._http_cfg:
            return
        self._stop_http()
        self._http_cfg = cfg
        if not cfg.enabled:
            return
        view = self.view
        endpoints = Endpoints(
            health=lambda: liveness(view.snapshot(), view.health),
            ready=lambda: readiness(view.snapshot()),
            status=lambda: status_document(view.snapshot()),
            registry=self.registry,
        )
        server = HttpServer(cfg.address, endpoints)
        if server.start():
            self.http = server

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    # -- pipeline sink -------------------------------------------------------------------------
    def observe(self, result: DetectionResult) -> None:
        """A result sink (post-processing thread): latency histograms and Home Assistant occupancy."""
        self.histograms.observe(result)
        bridge = self.homeassistant
        if bridge is not None:
            bridge.observe(result)

    def observe_tracking(self, update: TrackingUpdate) -> None:
        """A tracking sink: tracks, zone occupancy and line counts for /metrics."""
        self.tracking.observe(update)

    # -- Home Assistant ------------------------------------------------------------------------
    def attach(self, config: Config, publisher: Optional[MqttPublisher]) -> None:
        """(Re)announce Home Assistant discovery when its inputs changed; withdraw it when turned off."""
        self._attached = (config, publisher)
        ha = config.homeassistant
        cameras = tuple(c.name for c in config.cameras if c.enabled)
        # temperature and power entities only while a telemetry source really runs ("auto" may find none)
        snap = self.view.snapshot()
        telemetry = snap is not None and snap.telemetry is not None
        tracking = config.tracking
        zones = {c: [z.name for z in tracking.cameras[c].zones] for c in cameras if c in tracking.cameras}
        lines = {c: [ln.name for ln in tracking.cameras[c].lines] for c in cameras if c in tracking.cameras}
        if not tracking.enabled:
            zones, lines = {}, {}
        key = (ha, cameras, telemetry, config.mqtt.events, id(publisher), str(zones), str(lines))
        if key == self._ha_key:
            return
        self._ha_key = key
        old, self.homeassistant = self.homeassistant, None
        if old is not None and old.publisher is publisher:
            # a camera that is gone (or discovery turned off) leaves no retained presence behind
            old.clear_presence([c for c in old.cameras if c not in cameras or not ha.enabled])
        if publisher is None:
            return
        if not ha.enabled:
            withdraw(publisher, config.state_path)
            return
        bridge = HomeAssistantBridge(
            ha, config.mqtt.events, publisher, cameras, telemetry, config.state_path, zones, lines
        )
        bridge.announce()
        self._announced_at_connects = self._connects()
        self.homeassistant = bridge

    def _connects(self) -> Optional[int]:
        snap = self.view.snapshot()
        value = snap.mqtt.counters.get("connects") if snap is not None else None
        return None if value is None else int(value)

    def tick(self) -> None:
        """From the supervisor's loop: keep the HTTP server serving, feed Home Assistant's state."""
        http = self.http
        if http is not None and http.failure is not None:
            log.error("HTTP server failed (%s); starting it again", http.failure)
            cfg, self._http_cfg = self._http_cfg, None
            self._stop_http()
            if cfg is not None:
                self._set_http(cfg)
        if self._attached is not None:
            self.attach(*self._attached)  # a no-op unless something it depends on changed
        bridge = self.homeassistant
        if bridge is None:
            return
        bridge.tick()
        # announce again after every new connection: a broker restarted without persistence has
        # forgotten the retained discovery configs (and Home Assistant then forgets the device)
        connects = self._connects()
        if connects is not None and connects != self._announced_at_connects:
            if self._announced_at_connects is not None and connects > self._announced_at_connects:
                bridge.announce()
            self._announced_at_connects = connects

    # -- reload and stop -----------------------------------------------------------------------
    def reconfigure(self, config: Config, publisher: Optional[MqttPublisher]) -> None:
        self._set_http(config.http)
        self.attach(config, publisher)

    def stop(self) -> None:
        self.homeassistant = None
        self._attached = None
        self._stop_http()
