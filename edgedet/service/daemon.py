"""The long-running daemon: starts the stages, supervises them, reloads, and stops gracefully.

The supervisor loop runs in the main thread: it polls worker failures and heartbeats, publishes stats,
updates the systemd STATUS line, applies reloads, and returns an exit code for the CLI.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from edgedet.app import (
    Pipeline,
    build_capture,
    build_pipeline,
    describe_failure,
    expire_tracking,
    start_pipeline,
    stop_pipeline,
)
from edgedet.config import Config, load_config
from edgedet.errors import ConfigError, EdgedetError, SourceError
from edgedet.runtime.worker import Worker

if TYPE_CHECKING:
    from edgedet.publish.mqtt import MqttPublisher
    from edgedet.service.notify import Notifier
    from edgedet.service.watchdog import WatchdogPinger
    from edgedet.telemetry.base import TelemetryReader
    from edgedet.telemetry.throttle import ThrottlePolicy

log = logging.getLogger(__name__)

# a capture worker that crashed (a bug, not a dead camera: those are handled inside it) is restarted
# this many times before the daemon gives up and exits non-zero for systemd to restart it
MAX_CAPTURE_RESTARTS = 5
STATUS_INTERVAL_S = 5.0  # how often the frame rates in systemd's STATUS= line are refreshed


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
        self._capture_restarts: Dict[str, int] = {}
        self._last_stats = time.monotonic()
        self._last_telemetry = time.monotonic()
        self._last_status = ""
        self._last_status_states = ""
        self._last_status_time = 0.0
        self.reload_error: Optional[str] = None

    # -- start ---------------------------------------------------------------------------------
    def start(self, ready_timeout: float = 20.0) -> None:
        """Start every stage; raises EdgedetError (with a user-facing message) when start-up fails."""
        self.publisher = self._start_publisher(self.config)
        try:
            self.pipeline = build_pipeline(self.config, self.publisher)
        except BaseException:
            self._stop_publisher(2.0)
            raise
        start_pipeline(self.pipeline)
        try:
            self._wait_first_open(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.telemetry, self.throttle = self._start_telemetry(self.config)
        if self.notifier is not None:
            self.notifier.ready()
            self._start_watchdog()
        log.info("edgedet running: %s", self.status_line())

    def _start_publisher(self, config: Config) -> Optional[MqttPublisher]:
        if not config.mqtt.enabled:
            return None
        from edgedet.publish.mqtt import MqttPublisher, resolve_password

        publisher = MqttPublisher(
            config.mqtt, config.resolved_device_id, config.state_path, resolve_password(config.mqtt)
        )
        publisher.start()
        return publisher

    def _start_telemetry(self, config: Config) -> Tuple[Optional[TelemetryReader], Optional[ThrottlePolicy]]:
        if config.telemetry.type == "none":
            return None, None
        from edgedet.telemetry import open_telemetry
        from edgedet.telemetry.throttle import ThrottlePolicy

        try:
            reader = open_telemetry(config.telemetry)
            if reader is not None:
                reader.start()
        except EdgedetError as exc:
            log.warning("telemetry disabled: %s", exc)
            return None, None
        policy = ThrottlePolicy(config.telemetry.throttle) if config.telemetry.throttle.enabled else None
        return reader, policy

    def _wait_first_open(self, timeout: float) -> None:
        """READY means: model loaded, first inference done (in build), every source tried once.

        If no camera at all can be opened the configuration is wrong (or nothing is plugged in): that is
        a start-up error. If only some fail, they keep being retried with backoff while the others run,
        since one camera that is down must not take a whole multi-camera device offline.
        """
        from edgedet.sources.capture import CaptureState

        deadline = time.monotonic() + timeout
        pipeline = self._require_pipeline()
        while time.monotonic() < deadline:
            if all(w.state != CaptureState.STARTING for w in pipeline.captures.values()):
                break
            time.sleep(0.05)
        else:
            log.warning("some cameras are still opening after %.0f s; continuing", timeout)
        failed = {n: w for n, w in pipeline.captures.items() if w.state == CaptureState.FAILED}
        if failed and len(failed) == len(pipeline.captures):
            reasons = "; ".join(f"camera {n}: {w.status().last_error}" for n, w in failed.items())
            raise SourceError(f"no camera could be opened: {reasons}")
        for name, worker in failed.items():
            log.error("camera %s: %s; retrying in the background", name, worker.status().last_error)
            worker.join(1.0)
            pipeline.board.remove(name)
            retry = build_capture(self.config, name, pipeline, retry_first_open=True)
            pipeline.captures[name] = retry
            retry.start()

    def _start_watchdog(self) -> None:
        from edgedet.service.watchdog import WatchdogPinger

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
        from edgedet.service.watchdog import WatchdogGate, worker_age

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
        if self._all_sources_ended():
            log.info("every source has ended (files played once); stopping")
            return 0
        now = time.monotonic()
        self._poll_telemetry(now)
        if now - self._last_stats >= self.config.stats.interval_s:
            self._last_stats = now
            self.publish_stats()
        self._update_status()
        return None

    def _restart_capture(self, camera: str, failure: BaseException) -> bool:
        pipeline = self._require_pipeline()
        count = self._capture_restarts.get(camera, 0) + 1
        self._capture_restarts[camera] = count
        log.error("camera %s: capture thread failed (%s); restart %d", camera, failure, count)
        if count > MAX_CAPTURE_RESTARTS:
            return False
        pipeline.captures[camera].join(1.0)
        pipeline.board.remove(camera)
        worker = build_capture(self.config, camera, pipeline, retry_first_open=True)
        pipeline.captures[camera] = worker
        worker.start()
        return True

    def _all_sources_ended(self) -> bool:
        pipeline = self._require_pipeline()
        if not pipeline.captures:
            return False
        states = [w.state.value for w in pipeline.captures.values()]
        if not all(s == "ended" for s in states):
            return False
        # every frame already read must still get through inference and publishing
        return not any(len(s) for s in pipeline.board.slots.values()) and pipeline.post.inbox.empty()

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
        from edgedet.telemetry.energy import stats_summary

        payload: Dict[str, Any] = reading.to_payload()
        pipeline = self._require_pipeline()
        payload["energy"] = stats_summary(reading, pipeline.stats.total_fps())
        if self.throttle is not None:
            payload["throttle"] = self.throttle.state_payload()
        return payload

    def _apply_throttle(self, decision: Any) -> None:
        pipeline = self._require_pipeline()
        if not decision.changed:
            return
        log.warning(
            "thermal policy: %s -> max %s fps (%s)", decision.state, decision.max_fps, decision.reason
        )
        for worker in pipeline.captures.values():
            worker.set_max_fps(decision.max_fps)

    def stats_payload(self) -> Dict[str, Any]:
        pipeline = self._require_pipeline()
        cameras: Dict[str, Any] = {}
        for name, worker in pipeline.captures.items():
            st = worker.status()
            slot = pipeline.board.slots.get(name)
            cameras[name] = {
                "state": st.state.value,
                "frames_in": st.frames_read,
                "frames_out": pipeline.stats.published(name),
                "dropped": (slot.dropped if slot is not None else 0)
                + st.frames_dropped_pool
                + st.frames_dropped_behind,
                "skipped": st.frames_skipped,
                "corrupt": st.frames_corrupt,
                "reconnects": st.reconnects,
                "fps": _round(pipeline.stats.fps(name)),
                "last_error": st.last_error,
            }
        payload: Dict[str, Any] = {
            "uptime_s": round(time.monotonic() - pipeline.stats.started, 1),
            "cameras": cameras,
            "latency_ms": pipeline.stats.latency_summary(),
            "model": vars(pipeline.model.model_info),
        }
        if self.telemetry is not None:
            from edgedet.telemetry.energy import stats_summary

            payload["power"] = stats_summary(self.telemetry.latest(), pipeline.stats.total_fps())
        if self.throttle is not None:
            payload["throttle"] = self.throttle.state_payload()
        if self.publisher is not None:
            payload["mqtt"] = self.publisher.status_payload()
        if self.reload_error is not None:
            payload["config_error"] = self.reload_error
        return payload

    def publish_stats(self) -> None:
        payload = self.stats_payload()
        if self.publisher is not None:
            self.publisher.publish_stats(payload)
        pipeline = self._require_pipeline()
        expire_tracking(pipeline, time.time())
        parts = []
        for name, cam in payload["cameras"].items():
            seen = pipeline.stats.take_in_view(name)
            top = ", ".join(f"{n} {c}" for n, c in sorted(seen.items(), key=lambda kv: -kv[1])[:4])
            parts.append(
                f"{name}: {cam['state']} {cam['fps'] or 0:.1f} fps {cam['frames_out']} out "
                f"{cam['dropped']} dropped" + (f"; in view: {top}" if top else "")
            )
        log.info("stats: %s", " | ".join(parts))

    def status_line(self) -> str:
        """One line for systemd's STATUS=: cameras up/down with their rates, precision, reload errors."""
        pipeline = self.pipeline
        if pipeline is None:
            return "starting"
        states = {n: w.state.value for n, w in pipeline.captures.items()}
        up = [n for n, s in states.items() if s == "streaming"]
        down = [f"{n} {s}" for n, s in states.items() if s != "streaming"]
        rates = ", ".join(f"{n} {pipeline.stats.fps(n) or 0.0:.1f} fps" for n in up)
        info = pipeline.model.model_info
        text = f"{len(up)}/{len(states)} cameras up" + (f" ({rates})" if rates else "")
        text += f"; {info.backend} {info.precision}"
        if down:
            text += f"; down: {', '.join(down)}"
        if self.reload_error:
            text += f"; config reload rejected, running the last good config: {self.reload_error}"
        return text

    def _update_status(self) -> None:
        # STATUS= on every change of camera state, and the rates at most every few seconds
        if self.notifier is None:
            return
        now = time.monotonic()
        line = self.status_line()
        states = line.split(" (")[0] + line.split(";", 1)[-1]
        if line == self._last_status:
            return
        if states == self._last_status_states and now - self._last_status_time < STATUS_INTERVAL_S:
            return
        self._last_status, self._last_status_states, self._last_status_time = line, states, now
        self.notifier.status(line)

    # -- reload --------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config file; keep the running config when the new one is invalid."""
        if self.config_path is None:
            log.warning("reload requested, but the daemon runs the built-in demo config: nothing to reload")
            return False
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            # last-known-good: the running config stays; the error goes to the log, STATUS and MQTT
            self.reload_error = "; ".join(exc.problems)
            log.error("config reload rejected, keeping the last good config:\n%s", exc)
            if self.publisher is not None:
                self.publisher.publish_stats(self.stats_payload())
            if self.notifier is not None:
                self.notifier.ready(status=self.status_line())
                self._last_status = self.status_line()
            return False
        self.reload_error = None
        self._apply_with_watchdog_paused(new)
        if self.notifier is not None:
            self.notifier.ready(status=self.status_line())
            self._last_status = self.status_line()
        return True

    def _apply_with_watchdog_paused(self, new: Config) -> None:
        # systemd keeps the watchdog armed while RELOADING: a model rebuild must not look like a hang
        from edgedet.service.watchdog import always_healthy

        if self.pinger is not None:
            self.pinger.set_health(always_healthy("reloading"))
        try:
            self._apply(new)
        finally:
            if self.pinger is not None:
                self.pinger.set_health(self.health)

    def _apply(self, new: Config) -> None:
        from edgedet.service.reload import plan_reload

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
            self.pipeline = build_pipeline(new, self.publisher)
            start_pipeline(self.pipeline)
        else:
            pipeline.config = new
            pipeline.publisher = self.publisher
            if plan.restart_all_captures:
                names = tuple(pipeline.captures)
                self._restart_cameras(names, plan.captures_to_restart(new))
            else:
                self._restart_cameras(plan.cameras_to_stop, plan.cameras_to_start)
        if plan.restart_telemetry:
            self._stop_telemetry()
            self.telemetry, self.throttle = self._start_telemetry(new)
        if plan.log_level_changed:
            from edgedet.service.logging_setup import set_level

            set_level(new.log_level)

    def _restart_cameras(self, to_stop: Sequence[str], to_start: Sequence[str]) -> None:
        pipeline = self._require_pipeline()
        for name in to_stop:
            worker = pipeline.captures.pop(name, None)
            if worker is not None:
                worker.stop()
                worker.join(5.0)
            pipeline.board.remove(name)
        for name in to_start:
            camera = next(c for c in self.config.cameras if c.name == name)
            if camera.enabled:
                worker = build_capture(self.config, name, pipeline, retry_first_open=True)
                pipeline.captures[name] = worker
                worker.start()

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
        if self.notifier is not None:
            self.notifier.stopping()
        if self.pinger is not None:
            self.pinger.stop()
        if self.pipeline is not None:
            stop_pipeline(self.pipeline, timeout * 0.5)
        self._stop_telemetry()
        self._stop_publisher(max(1.0, deadline - time.monotonic()))

    def _stop_publisher(self, timeout: float) -> None:
        if self.publisher is not None:
            self.publisher.stop(timeout)
            self.publisher = None

    def _stop_telemetry(self) -> None:
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)
