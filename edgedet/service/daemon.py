"""The long-running daemon: starts the stages, supervises them, reloads, and stops gracefully.

The supervisor loop runs in the main thread: it polls worker failures and heartbeats, builds the status
snapshot (service/status.py) that the log line, systemd's STATUS= and the MQTT stats message all read,
applies reloads, and returns an exit code for the CLI.

Transient versus fatal: a camera that cannot be opened (at start or later) is transient; it is retried
forever with capped backoff and shown as down, and READY=1 does not wait for it. Fatal problems (an invalid
config, a model that cannot be loaded, a file source that cannot be read) end the start with one clear
error, and the CLI exits non-zero.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from edgedet.app import (
    Pipeline,
    build_pipeline,
    describe_failure,
    expire_tracking,
    start_pipeline,
    stop_pipeline,
)
from edgedet.config import Config, load_config
from edgedet.errors import ConfigError, EdgedetError, SourceError
from edgedet.publish.mqtt import MqttPublisher, resolve_password
from edgedet.runtime.memory import trim_heap
from edgedet.runtime.worker import Worker
from edgedet.service.logging_setup import set_level
from edgedet.service.notify import Notifier
from edgedet.service.observe import DaemonView, Observability, latest_reading, model_info
from edgedet.service.preflight import ERROR, Finding, check_references
from edgedet.service.reload import plan_reload
from edgedet.service.status import (
    DaemonStatus,
    StatusBuilder,
    log_line,
    stats_payload,
    status_key,
    status_line,
)
from edgedet.service.watchdog import WatchdogGate, WatchdogPinger, always_healthy, worker_age
from edgedet.sources.capture import CaptureState
from edgedet.telemetry import open_telemetry
from edgedet.telemetry.base import TelemetryReader
from edgedet.telemetry.throttle import ThrottleDecision, ThrottlePolicy

log = logging.getLogger(__name__)

# a capture worker that crashed (a bug, not a dead camera: those are handled inside it) is restarted
# this many times before the daemon gives up and exits non-zero for systemd to restart it
MAX_CAPTURE_RESTARTS = 5
STATUS_INTERVAL_S = 5.0  # how often the frame rates in systemd's STATUS= line are refreshed
FILE_OPEN_TIMEOUT_S = 20.0  # how long start() waits for file sources to prove they can be read


def capture_may_restart(state: CaptureState, restarts_so_far: int, limit: int = MAX_CAPTURE_RESTARTS) -> bool:
    """Whether a capture thread that raised is replaced (True) or the daemon exits for systemd (False).

    A source marked FAILED is unusable by itself (a file that cannot be read): no retry helps. Any other
    failure is a crash in the thread (a dead camera is handled inside it), restarted ``limit`` times.
    """
    return state != CaptureState.FAILED and restarts_so_far < limit


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Optional[Path] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier
        self.publisher: Optional[MqttPublisher] = None
        self.telemetry: Optional[TelemetryReader] = None
        self.throttle: Optional[ThrottlePolicy] = None
        self.pipeline: Optional[Pipeline] = None
        self.pinger: Optional[WatchdogPinger] = None
        self.reload_error: Optional[str] = None
        self._capture_restarts: Dict[str, int] = {}
        self._builder = StatusBuilder()
        self._status: Optional[DaemonStatus] = None
        self._phase = "running"
        self._last_stats = time.monotonic()
        self._last_telemetry = time.monotonic()
        self._last_status_line = ""
        self._last_status_key = ""
        self._last_status_time = 0.0
        # HTTP endpoints and Home Assistant discovery read the snapshot; they never reach into stages
        self.observability = Observability(
            DaemonView(
                lambda: self._status,
                self.health,
                lambda: latest_reading(self.telemetry),
                lambda: model_info(self.pipeline),
            )
        )

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every stage; raises EdgedetError (with a user-facing message) when start-up fails.

        READY=1 is sent once the model is loaded and a warm-up inference succeeded (in build_pipeline)
        and file sources proved readable; cameras that are not up yet do not delay it.
        """
        check_or_raise(self.config)
        self.observability.start(self.config)
        self.publisher = self._start_publisher(self.config)
        try:
            self.pipeline = build_pipeline(
                self.config,
                self.publisher,
                [self.observability.observe],
                [self.observability.observe_tracking],
            )
        except BaseException:
            self._stop_publisher(2.0)
            self.observability.stop()
            raise
        start_pipeline(self.pipeline)
        try:
            self._check_file_sources(FILE_OPEN_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.telemetry, self.throttle = self._start_telemetry(self.config)
        self.refresh_status()
        self.observability.attach(self.config, self.publisher)
        if self.notifier is not None:
            self.notifier.ready(status=status_line(self.status))
            self._start_watchdog()
        log.info("edgedet running: %s", status_line(self.status))

    def _start_publisher(self, config: Config) -> Optional[MqttPublisher]:
        if not config.mqtt.enabled:
            return None
        publisher = MqttPublisher(
            config.mqtt, config.resolved_device_id, config.state_path, resolve_password(config.mqtt)
        )
        publisher.start()
        return publisher

    def _start_telemetry(self, config: Config) -> Tuple[Optional[TelemetryReader], Optional[ThrottlePolicy]]:
        if config.telemetry.type == "none":
            return None, None
        try:
            reader = open_telemetry(config.telemetry)
            if reader is not None:
                reader.start()
        except EdgedetError as exc:
            log.warning("telemetry disabled: %s", exc)
            return None, None
        policy = ThrottlePolicy(config.telemetry.throttle) if config.telemetry.throttle.enabled else None
        return reader, policy

    def _check_file_sources(self, timeout: float) -> None:
        """A file source that cannot be read is a configuration error (a file does not heal): wait for
        the file sources' first opening and raise for the first that failed. Cameras are not waited for."""
        pipeline = self._require_pipeline()
        files = {n: w for n, w in pipeline.captures.items() if not w.retry_first_open}
        deadline = time.monotonic() + timeout
        while any(w.state == CaptureState.STARTING for w in files.values()):
            if time.monotonic() > deadline:
                log.warning("some file sources are still opening after %.0f s; continuing", timeout)
                break
            time.sleep(0.05)
        for name, worker in files.items():
            if worker.state == CaptureState.FAILED:
                raise SourceError(f"camera {name}: {worker.status().last_error}")

    def _start_watchdog(self) -> None:
        if self.notifier is None:
            return
        interval = self.notifier.watchdog_interval()
        if interval:
            self.pinger = WatchdogPinger(self.notifier, self.health, interval)
            self.pinger.start()

    def _require_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise EdgedetError("the pipeline is not running")
        return self.pipeline

    # -- supervision ---------------------------------------------------------------------------
    def health(self) -> Tuple[bool, str]:
        """Healthy while inference and post-processing show progress; see WatchdogGate.

        Capture stages are optional for the watchdog: a camera that is down is reported in STATUS and
        retried by its own thread, while a hung inference call or a dead worker stops the pings.
        """
        pipeline = self.pipeline
        if pipeline is None:
            return False, "pipeline not running"
        ages = {name: worker_age(w) for name, w in pipeline.workers().items()}
        optional = {f"capture-{name}" for name in pipeline.captures}
        if isinstance(self.telemetry, Worker):  # shown in STATUS, never critical: not worth a restart
            ages[self.telemetry.thread_name] = worker_age(self.telemetry)
            optional.add(self.telemetry.thread_name)
        return WatchdogGate(self.config.service.heartbeat_timeout_s).check(ages, optional=optional)

    def supervise_once(self) -> Optional[int]:
        """One pass of the supervisor; returns an exit code when the daemon must end."""
        pipeline = self._require_pipeline()
        for name, worker in pipeline.workers().items():
            if name.startswith("capture-"):
                continue
            failure = worker.failure
            if failure is not None:
                log.error("stage failed, exiting for a restart: %s", describe_failure(name, failure))
                return 1
        for camera, worker in list(pipeline.captures.items()):
            failure = worker.failure
            if failure is not None and not self._restart_capture(camera, failure):
                return 1
        if pipeline.all_sources_ended():
            log.info("every source has ended (files played once); stopping")
            return 0
        now = time.monotonic()
        self._poll_telemetry(now)
        self.refresh_status()
        self.observability.tick()
        if now - self._last_stats >= self.config.stats.interval_s:
            self._last_stats = now
            self.publish_stats()
        self._update_systemd_status()
        return None

    def _restart_capture(self, camera: str, failure: BaseException) -> bool:
        pipeline = self._require_pipeline()
        state = pipeline.captures[camera].state
        restarts = self._capture_restarts.get(camera, 0)
        if not capture_may_restart(state, restarts):
            log.error("camera %s cannot be used, exiting: %s", camera, failure)
            return False
        self._capture_restarts[camera] = restarts + 1
        log.error("camera %s: capture thread failed (%s); restart %d", camera, failure, restarts + 1)
        pipeline.replace_capture(camera, join_timeout=1.0)
        return True

    def _poll_telemetry(self, now: float) -> None:
        if self.telemetry is None or now - self._last_telemetry < self.config.telemetry.interval_s:
            return
        self._last_telemetry = now
        reading = self.telemetry.latest()
        if self.throttle is not None:
            # also without a reading: a dead sensor must not leave a frame-rate cap in force
            self._apply_throttle(self.throttle.update(reading))
        if reading is not None and self.publisher is not None:
            self.publisher.publish_telemetry(self.telemetry_payload(reading))

    def telemetry_payload(self, reading: Any) -> Dict[str, Any]:
        payload: Dict[str, Any] = reading.to_payload()
        status = self.status
        power = stats_payload(status).get("power")
        if power is not None:
            payload["energy"] = power
        if self.throttle is not None:
            payload["throttle"] = self.throttle.state_payload()
        return payload

    def _apply_throttle(self, decision: ThrottleDecision) -> None:
        if not decision.changed:
            return
        log.warning(
            "thermal policy: %s -> max %s fps (%s)", decision.state, decision.max_fps, decision.reason
        )
        self._require_pipeline().set_max_fps(decision.max_fps)

    # -- status --------------------------------------------------------------------------------
    def refresh_status(self) -> DaemonStatus:
        """Build the snapshot from the live stages (the supervisor does this on every pass)."""
        self._status = self._builder.build(
            self._require_pipeline(),
            publisher=self.publisher,
            telemetry=self.telemetry,
            throttle=self.throttle,
            pinger=self.pinger,
            config_error=self.reload_error,
            capture_restarts=self._capture_restarts,
            phase=self._phase,
        )
        return self._status

    @property
    def status(self) -> DaemonStatus:
        """The latest snapshot; safe to read from any thread (it is replaced, never changed)."""
        status = self._status
        return status if status is not None else self.refresh_status()

    def stats_payload(self) -> Dict[str, Any]:
        return stats_payload(self.status, interval_s=self.config.stats.interval_s)

    def publish_stats(self) -> None:
        status = self.status
        if self.publisher is not None:
            self.publisher.publish_stats(stats_payload(status, interval_s=self.config.stats.interval_s))
        log.info("stats: %s", log_line(status))
        pipeline = self._require_pipeline()
        expire_tracking(pipeline, time.time())
        for camera in status.cameras:  # "in view" covers one stats interval
            pipeline.stats.take_in_view(camera.name)
        # freed decoder buffers of closed streams stay mapped in glibc's arenas until trimmed
        trim_heap()

    def status_line(self) -> str:
        """One line for systemd's STATUS=: cameras up/down with their rates or reasons, precision."""
        if self.pipeline is None:
            return "starting"
        return status_line(self.status)

    def _update_systemd_status(self) -> None:
        # STATUS= at once on a change of state (a camera down, a reload refused), the rates every few s
        if self.notifier is None:
            return
        now = time.monotonic()
        status = self.status
        line, key = status_line(status), status_key(status)
        if line == self._last_status_line:
            return
        if key == self._last_status_key and now - self._last_status_time < STATUS_INTERVAL_S:
            return
        self._send_status(line, key, now)

    def _send_status(self, line: str, key: str, now: float) -> None:
        self._last_status_line, self._last_status_key, self._last_status_time = line, key, now
        if self.notifier is not None:
            self.notifier.status(line)

    # -- reload --------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config file; keep the running config when the new one is invalid."""
        if self.config_path is None:
            log.warning("reload requested, but the daemon runs the built-in demo config: nothing to reload")
            return False
        if self.notifier is not None:
            self.notifier.reloading()
        self._phase = "reloading"
        if self.pipeline is not None:
            self.refresh_status()  # readers in other threads (HTTP) see the reload while it runs
        try:
            new = load_config(self.config_path)
            check_or_raise(new)
        except ConfigError as exc:
            # last-known-good: the running config stays; the error goes to the log, STATUS and MQTT
            self.reload_error = "; ".join(exc.problems)
            log.error("config reload rejected, keeping the last good config:\n%s", exc)
            self._phase = "running"
            self._reloaded()
            if self.publisher is not None:
                self.publisher.publish_stats(self.stats_payload())
            return False
        self.reload_error = None
        try:
            self._apply_with_watchdog_paused(new)
        finally:
            self._phase = "running"
            self._reloaded()
        return True

    def _reloaded(self) -> None:
        # a reload that was announced (RELOADING=1) must be closed with READY=1, with the new status
        status = self.refresh_status()
        if self.notifier is not None:
            self.notifier.ready(status=status_line(status))
            self._last_status_line, self._last_status_key = status_line(status), status_key(status)
            self._last_status_time = time.monotonic()

    def _apply_with_watchdog_paused(self, new: Config) -> None:
        # systemd keeps the watchdog armed while RELOADING: a model rebuild must not look like a hang
        if self.pinger is not None:
            self.pinger.set_health(always_healthy("reloading"))
        try:
            self._apply(new)
        finally:
            if self.pinger is not None:
                self.pinger.set_health(self.health)

    def _apply(self, new: Config) -> None:
        plan = plan_reload(self.config, new)
        log.info("applying new config: %s", plan.summary())
        old = self.config
        self.config = new
        pipeline = self._require_pipeline()
        if plan.restart_publisher:
            self._stop_publisher(old.service.stop_timeout_s)
            self.publisher = self._start_publisher(new)
        if plan.restart_inference:
            stop_pipeline(pipeline, old.service.stop_timeout_s)
            self.pipeline = build_pipeline(
                new, self.publisher, [self.observability.observe], [self.observability.observe_tracking]
            )
            start_pipeline(self.pipeline)
        else:
            pipeline.config = new
            pipeline.publisher = self.publisher
            to_stop = tuple(pipeline.captures) if plan.restart_all_captures else plan.cameras_to_stop
            to_start = plan.captures_to_restart(new)
            for name in to_stop:
                if name not in to_start:
                    pipeline.remove_capture(name)
            for name in to_start:
                pipeline.replace_capture(name)
        for name in plan.cameras_removed:
            self._capture_restarts.pop(name, None)
        if plan.restart_telemetry:
            self._stop_telemetry()
            self.telemetry, self.throttle = self._start_telemetry(new)
        if plan.log_level_changed:
            set_level(new.log_level)
        self.observability.reconfigure(new, self.publisher)

    # -- stop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event, reload: Optional[threading.Event] = None, tick: float = 0.25) -> int:
        """Supervise until ``stop`` is set or a stage fails; returns the exit code."""
        code = 0
        while not stop.wait(tick):
            if reload is not None and reload.is_set():
                reload.clear()
                self.reload()
            result = self.supervise_once()
            if result is not None:
                code = result
                break
        return code

    def stop(self) -> None:
        timeout = self.config.service.stop_timeout_s
        deadline = time.monotonic() + timeout
        self._phase = "stopping"
        if self.notifier is not None:
            self.notifier.stopping()
        if self.pinger is not None:
            self.pinger.stop()
        if self.pipeline is not None:
            stop_pipeline(self.pipeline, timeout * 0.5)
        self._stop_telemetry()
        self._stop_publisher(max(1.0, deadline - time.monotonic()))
        self.observability.stop()

    def _stop_publisher(self, timeout: float) -> None:
        if self.publisher is not None:
            self.publisher.stop(timeout)
            self.publisher = None

    def _stop_telemetry(self) -> None:
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None


def check_or_raise(config: Config) -> None:
    """Log the warnings about what ``config`` points to; raise ConfigError (one line) for the errors."""
    findings = check_references(config)
    for finding in findings:
        if finding.severity != ERROR:
            log.warning("%s: %s", finding.where, finding.message)
    fatal = [f for f in findings if f.severity == ERROR]
    if fatal:
        raise ConfigError(_one_line(fatal), problems=[f"{f.where}: {f.message}" for f in fatal])


def _one_line(findings: Sequence[Finding]) -> str:
    return "; ".join(f"{f.where}: {f.message}" for f in findings)
