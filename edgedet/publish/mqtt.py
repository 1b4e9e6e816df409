"""The MQTT publisher: paho-mqtt 2.x (VERSION2 callbacks) on its own network thread.

Calls from the pipeline return at once: non-durable messages go straight to paho (QoS 0 ones are
counted as dropped while the broker is away; QoS 1/2 ones wait in paho's bounded queue), durable ones
go through the on-disk outbox (outbox.py). Connection problems (broker down, bad credentials, TLS) are
logged clearly and rate-limited, paho reconnects by itself with capped exponential backoff, and no
exception ever leaves a paho callback or reaches the pipeline.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Mapping, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgedet.errors import PublishError
from edgedet.publish import messages as m
from edgedet.publish.config import MessageClass, MqttConfig
from edgedet.publish.messages import Envelope, ModelInfo
from edgedet.publish.outbox import ACCEPTED, Outbox, OutboxStats, SendInfo, is_published
from edgedet.runtime.ratelimit import RateLimitedLog
from edgedet.tracking.values import PresenceEvent, Snapshot, TrackingUpdate
from edgedet.types import DetectionResult

log = logging.getLogger(__name__)

__all__ = ["ModelInfo", "MqttPublisher", "PublisherStatus", "resolve_password"]

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# paho's MQTTErrorCode values (stable since 1.x)
_ERR_SUCCESS = 0
_ERR_NO_CONN = 4
_ERR_QUEUE_SIZE = 15
# MQTT 5 PUBACK reason: accepted, but nobody subscribed (the broker discards the message)
_RC_NO_MATCHING_SUBSCRIBERS = 0x10


def resolve_password(cfg: MqttConfig, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The broker password: env var ``cfg.password_env``, else $CREDENTIALS_DIRECTORY/cfg.password_credential
    (systemd ``LoadCredential=``); None when neither is set or the credential file is empty (the unit
    installs an empty one so that LoadCredential= never fails). One trailing newline is stripped."""
    env = os.environ if environ is None else environ
    value = env.get(cfg.password_env)
    if value:
        return value
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / cfg.password_credential
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublishError(f"cannot read the MQTT password credential {path}: {exc}") from exc
        text = text[:-1] if text.endswith("\n") else text
        return text or None
    return None


@dataclass
class PublisherStatus:
    connected: bool
    last_error: Optional[str]
    sent: int  # acknowledged by the broker (QoS 1/2) or written to the socket (QoS 0)
    dropped: int  # non-durable messages not delivered: broker away (QoS 0), paho queue full, oversize
    queued: int  # non-durable QoS 1/2 messages waiting in paho's queue
    oversize: int  # refused for exceeding max_payload_bytes (durable or not)
    errors: int  # messages that could not be built or handed over (bug or bad input), logged
    connects: int
    connect_failures: int
    outbox_depth: int
    outbox_dropped: int
    outbox_not_persisted: int
    outbox_rejected: int  # durable messages the broker or the client refused (not retried)
    outbox_memory: int  # durable messages held only in memory (store failing): lost if the process stops
    outbox_no_subscribers: int  # durable messages the broker acknowledged with "No matching subscribers"
    outbox_unrouted_retries: int  # ... and kept to be sent again (outbox.unrouted.retry), per re-send
    outbox_mode: str  # sqlite, degraded (some messages in memory only) or memory (store unusable)
    outbox_oldest_age_s: Optional[float] = None  # age of the oldest message waiting for its ack
    outbox: Optional[OutboxStats] = None

    def as_dict(self, full: bool = True) -> Dict[str, Any]:
        d = asdict(self)
        d["outbox"] = self.outbox.as_dict() if (full and self.outbox is not None) else None
        if not full:
            d.pop("outbox")
        return d


def packet_size(topic: str, payload: bytes, qos: int, mqtt5: bool) -> int:
    """Bytes of the PUBLISH packet paho sends for this message (no properties), as the broker's
    Maximum Packet Size counts them."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos > 0 else 0) + (1 if mqtt5 else 0) + len(payload)
    header = 2
    n = remaining
    while n >= 128:
        n //= 128
        header += 1
    return header + remaining


class _RecordingSSLSocket(ssl.SSLSocket):
    """Keeps the TLS handshake error (paho swallows it) so status() can name it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except Exception as exc:
            hook = getattr(self.context, "on_handshake_error", None)
            if hook is not None:
                hook(exc)
            raise


class _Context(ssl.SSLContext):
    sslsocket_class = _RecordingSSLSocket
    on_handshake_error: Optional[Callable[[BaseException], None]] = None


class MqttPublisher:
    """Construct, ``start()``, publish from any thread, ``stop(timeout)``.

    ``state_dir`` holds the outbox (``cfg.outbox.path`` overrides) with the sequence numbers.
    ``outbox`` may be passed prebuilt (tests); otherwise one is made from ``cfg.outbox``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        state_dir: Path,
        password: Optional[str] = None,
        *,
        outbox: Optional[Outbox] = None,
    ) -> None:
        self.cfg = cfg
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device_id) or "edgedet"
        if safe != device_id:
            log.warning("device id %r is not topic-safe; publishing as %r", device_id, safe)
        self.device_id = safe
        self.base_topic = f"{cfg.topic_prefix}/{safe}"
        self.status_topic = self.topic(cfg.messages.status)
        self._password = password
        path = (
            Path(os.path.expanduser(cfg.outbox.path))
            if cfg.outbox.path
            else Path(state_dir) / "outbox.sqlite"
        )
        self.outbox = outbox if outbox is not None else Outbox(cfg.outbox, path)
        self._durable_ok = cfg.outbox.enabled
        self._client: Any = None
        self._started = False
        self._stopped = False
        self._connected = False
        self._last_error: Optional[str] = None
        self._tls_error: Optional[str] = None
        self._emit_lock = threading.Lock()
        self._lock = threading.Lock()
        self._nd_infos: Deque[Any] = collections.deque()
        self._max_packet: Optional[int] = None  # the broker's Maximum Packet Size (MQTT 5 CONNACK)
        self._last = threading.local()  # per calling thread: the outbox outcome of its last durable message
        self._counts = dict.fromkeys(
            ("sent", "dropped", "oversize", "errors", "connects", "connect_failures"), 0
        )
        self._warn = RateLimitedLog(log, interval_s=30.0)

    # -- topics --------------------------------------------------------------------------------
    def topic(self, cls: MessageClass, camera: Optional[str] = None, **names: str) -> str:
        rel = cls.topic.replace("{camera}", camera) if camera is not None else cls.topic
        for key, value in names.items():  # {zone}, {line}, {label}: names made topic-safe
            rel = rel.replace("{" + key + "}", _TOPIC_UNSAFE.sub("_", value) or "_")
        return f"{self.base_topic}/{rel}"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the outbox, configure paho and start connecting in the background.

        Raises PublishError only for configuration that can never work (unreadable TLS files,
        missing paho); a broker that is down is not an error here.
        """
        if self._started or not self.cfg.enabled:
            return
        cfg = self.cfg
        client = self._make_client()
        self.outbox.open()
        self.outbox.start(self._send_durable)
        props = None
        kwargs: Dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(cfg.session_expiry_s)
            kwargs = {"clean_start": bool(cfg.clean_start), "properties": props}
        self._client = client
        self._started = True
        try:
            client.connect_async(cfg.host, cfg.effective_port, cfg.keepalive_s, **kwargs)
        except (ValueError, OSError) as exc:
            raise PublishError(f"MQTT: cannot connect to {cfg.host}:{cfg.effective_port}: {exc}") from exc
        client.loop_start()
        log.info(
            "MQTT: connecting to %s:%d as %s (MQTT %s%s); topics under %s/",
            cfg.host,
            cfg.effective_port,
            self._client_id(),
            cfg.protocol,
            ", TLS" if cfg.tls is not None else "",
            self.base_topic,
        )

    def _client_id(self) -> str:
        return self.cfg.client_id or f"edgedet-{self.device_id}"

    def _make_client(self) -> Any:
        cfg = self.cfg
        if cfg.protocol == "5":
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id(), protocol=mqtt.MQTTv5
            )
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self._client_id(),
                protocol=mqtt.MQTTv311,
                clean_session=bool(cfg.clean_start),
            )
        client.max_inflight_messages_set(cfg.outbox.max_inflight)
        client.max_queued_messages_set(cfg.max_queued + cfg.outbox.max_inflight)
        # paho types these as int but computes with them: fractions of a second work
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        status = cfg.messages.status
        client.will_set(self.status_topic, m.STATUS_OFFLINE, qos=status.qos, retain=status.retain)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password)
            if self._password is not None and cfg.tls is None:
                log.warning(
                    "MQTT: the password for %r goes to %s:%d in clear text (no tls configured); anyone on "
                    "the network path can read it",
                    cfg.username,
                    cfg.host,
                    cfg.effective_port,
                )
        elif self._password is not None:
            log.warning("MQTT: a password is set but no username: the password is not sent")
        if cfg.tls is not None:
            client.tls_set_context(self._ssl_context())
            client.tls_insecure_set(cfg.tls.insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        return client

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self.cfg.tls
        if tls is None:
            raise PublishError("internal: TLS context without TLS settings")
        ctx = _Context(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = not tls.insecure
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.on_handshake_error = self._record_tls_error
        try:
            if tls.ca_file:
                ctx.load_verify_locations(cafile=os.path.expanduser(tls.ca_file))
            else:
                ctx.load_default_certs()
            if tls.cert_file and tls.key_file:
                ctx.load_cert_chain(os.path.expanduser(tls.cert_file), os.path.expanduser(tls.key_file))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise PublishError(
                f"MQTT TLS setup failed (ca_file={tls.ca_file}, cert_file={tls.cert_file}, "
                f"key_file={tls.key_file}): {exc}"
            ) from exc
        return ctx

    def stop(self, timeout: float = 10.0) -> None:
        """Flush durable messages as far as ``timeout`` allows, publish ``offline`` (retained) and
        disconnect cleanly. Undelivered durable messages stay in the outbox for the next start."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + max(timeout, 0.0)
        client = self._client
        # keep about a second for the offline message and the disconnect
        flushed = self.outbox.flush(max(deadline - time.monotonic() - 1.0, 0.0))
        if self._connected:
            status = self.cfg.messages.status
            try:
                info = client.publish(
                    self.status_topic, m.STATUS_OFFLINE, qos=status.qos, retain=status.retain
                )
                if status.qos > 0:
                    info.wait_for_publish(max(min(1.0, deadline - time.monotonic()), 0.1))
            except (ValueError, RuntimeError) as exc:
                log.warning("MQTT: could not publish offline status: %s", exc)
        try:
            client.disconnect()
        except Exception as exc:  # a half-open socket must not stop the shutdown
            log.debug("MQTT disconnect: %s", exc)
        client.loop_stop()
        self.outbox.set_connected(False)
        self.outbox.close(max(deadline - time.monotonic(), 1.0))
        st = self.outbox.stats()
        if not flushed or st.depth:
            stored = st.depth - st.memory
            if stored:
                log.warning(
                    "MQTT stopped with %d durable message(s) not acknowledged: kept in %s for the next start",
                    stored,
                    st.path,
                )
            if st.memory:
                log.error(
                    "MQTT stopped with %d durable message(s) not acknowledged that were only in memory (the "
                    "store %s could not be written): LOST",
                    st.memory,
                    st.path or "(none configured)",
                )
        queued = self._queued()
        if queued:
            log.warning("MQTT stopped with %d non-durable QoS>0 message(s) undelivered", queued)
        self._connected = False
        log.info("MQTT: stopped")

    # -- paho callbacks (network thread): never raise, never block -----------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                with self._lock:
                    self._counts["connect_failures"] += 1
                self._last_error = f"broker refused the connection: {reason_code}"
                self._warn.error(
                    "connect",
                    "MQTT %s:%d refused the connection: %s (check username/password and ACLs); retrying "
                    "with backoff up to %.0f s",
                    self.cfg.host,
                    self.cfg.effective_port,
                    reason_code,
                    self.cfg.reconnect_max_s,
                )
                return
            # MQTT 5: the broker's limit on our unacknowledged QoS>0 messages (mosquitto: 20 by
            # default); paho cannot change its own limit once connected, so the outbox keeps its
            # durable messages in flight under it, with a few slots left for status and stats
            recv_max = getattr(properties, "ReceiveMaximum", None) or 65535
            self._max_packet = getattr(properties, "MaximumPacketSize", None)
            with self._lock:
                self._counts["connects"] += 1
            self._connected = True
            self._last_error = None
            self._tls_error = None
            self._warn.reset("connect")
            self._warn.reset("lost")
            log.info(
                "MQTT: connected to %s:%d (session present: %s)",
                self.cfg.host,
                self.cfg.effective_port,
                getattr(flags, "session_present", None),
            )
            status = self.cfg.messages.status
            client.publish(self.status_topic, m.STATUS_ONLINE, qos=status.qos, retain=status.retain)
            self.outbox.set_connected(True, max(int(recv_max) - 4, 1))
        except Exception as exc:
            log.error("MQTT on_connect failed: %s", exc, exc_info=True)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        try:
            was = self._connected
            self._connected = False
            self.outbox.set_connected(False)
            if self._stopped:
                return
            if was:
                self._last_error = f"connection lost: {reason_code}"
                self._warn.warning(
                    "lost",
                    "MQTT: connection to %s:%d lost (%s); reconnecting with backoff up to %.0f s",
                    self.cfg.host,
                    self.cfg.effective_port,
                    reason_code,
                    self.cfg.reconnect_max_s,
                )
        except Exception as exc:
            log.error("MQTT on_disconnect failed: %s", exc, exc_info=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        try:
            with self._lock:
                self._counts["connect_failures"] += 1
            why = self._tls_error or self._probe()
            self._tls_error = None
            self._last_error = why
            self._warn.error(
                "connect",
                "MQTT: cannot connect to %s:%d: %s; retrying with backoff up to %.0f s",
                self.cfg.host,
                self.cfg.effective_port,
                why,
                self.cfg.reconnect_max_s,
            )
        except Exception as exc:
            log.error("MQTT on_connect_fail failed: %s", exc, exc_info=True)

    def _probe(self) -> str:
        """paho does not say why a connection failed: try the TCP part once to name the cause."""
        try:
            with socket.create_connection((self.cfg.host, self.cfg.effective_port), timeout=2.0):
                return "TCP connection works but the MQTT/TLS handshake failed"
        except OSError as exc:
            return f"broker unreachable ({exc.strerror or exc})"

    def _record_tls_error(self, exc: BaseException) -> None:
        self._tls_error = f"TLS handshake failed: {exc}"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        try:
            failed = bool(getattr(reason_code, "is_failure", False))
            nobody = getattr(reason_code, "value", 0) == _RC_NO_MATCHING_SUBSCRIBERS
            with self._lock:
                self._counts["sent"] += 0 if failed else 1
            self.outbox.on_ack(mid, failed, nobody)
        except Exception as exc:
            log.error("MQTT on_publish failed: %s", exc, exc_info=True)

    # -- sending -------------------------------------------------------------------------------
    def _send_durable(self, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[SendInfo]:
        """Called by the outbox writer: hand one committed row to paho (never while holding locks)."""
        too_big = self._too_big(topic, payload, qos)
        if too_big:
            # the broker would drop the connection on it, and the outbox would send it again for ever
            self._count("oversize")
            raise PublishError(too_big)
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == _ERR_NO_CONN:
            # QoS>0 while the connection just dropped: paho keeps the message and sends it after
            # reconnecting; mark it queued, or is_published() would raise for ever
            info.rc = _ERR_SUCCESS
        if info.rc == _ERR_SUCCESS:
            return info
        return None

    def _too_big(self, topic: str, payload: bytes, qos: int) -> Optional[str]:
        limit = self._max_packet
        if limit is None:
            return None
        size = packet_size(topic, payload, qos, self.cfg.protocol == "5")
        if size <= limit:
            return None
        return f"a {size}-byte packet exceeds the broker's Maximum Packet Size of {limit} bytes"

    def _send_now(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        if qos == 0 and not self._connected:
            self._count("dropped")
            return False
        too_big = self._too_big(topic, payload, qos)
        if too_big:
            self._count("oversize")
            self._count("dropped")
            self._warn.warning("packet-size", "MQTT: message on %s not sent: %s", topic, too_big)
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == _ERR_QUEUE_SIZE or (qos == 0 and info.rc != _ERR_SUCCESS):
            self._count("dropped")
            self._warn.warning("queue", "MQTT: message on %s dropped (broker away, queue full)", topic)
            return False
        if qos > 0:
            if info.rc == _ERR_NO_CONN:
                info.rc = _ERR_SUCCESS  # queued by paho until the broker is back (see _send_durable)
            with self._lock:
                self._nd_infos.append(info)
                while self._nd_infos and is_published(self._nd_infos[0]):
                    self._nd_infos.popleft()
        return True

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _emit(
        self,
        kind: str,
        cls: MessageClass,
        camera: Optional[str],
        build: Callable[[Envelope], Dict[str, Any]],
        **names: str,
    ) -> bool:
        """Number, build, size-check and send (or store) one JSON message; never raises."""
        if not self._started or self._stopped or not cls.enabled:
            return False
        try:
            durable = cls.durable and self._durable_ok
            stream = m.stream_key(kind, camera, "/".join(names.values()) or None)
            topic = self.topic(cls, camera, **names)
            with self._emit_lock:  # seq order == commit order for each durable stream
                seq, epoch = self.outbox.next_seq(stream, durable)
                env = Envelope(self.device_id, seq, epoch, time.time())
                payload = m.encode(build(env))
                if len(payload) > self.cfg.max_payload_bytes:
                    self._count("oversize")
                    self._count("dropped")
                    self._warn.warning(
                        "oversize",
                        "MQTT: %s message of %d bytes exceeds max_payload_bytes=%d: not sent (seq %d)",
                        kind,
                        len(payload),
                        self.cfg.max_payload_bytes,
                        seq,
                    )
                    return False
                row = None
                if durable:
                    row = self.outbox.enqueue(topic, payload, cls.qos, cls.retain, stream, seq, epoch)
                    if row is None:
                        self._last.outcome = "refused"
                        return False
            if row is not None:
                # outside the lock: callers on other threads share the group commit's fsync
                outcome = self.outbox.wait(row)
                self._last.outcome = outcome
                return outcome in ACCEPTED
            return self._send_now(topic, payload, cls.qos, cls.retain)
        except Exception as exc:
            self._count("errors")
            self._warn.error("emit-" + kind, "MQTT: cannot publish a %s message: %s", kind, exc)
            return False

    # -- public API ----------------------------------------------------------------------------
    def publish_detections(self, result: DetectionResult, model: ModelInfo) -> bool:
        """One frame's detections. Returns at once."""
        return self._emit(
            "detections",
            self.cfg.messages.detections,
            result.camera,
            lambda env: m.build_detections(result, model, env),
        )

    # -- the tracking stage's output -----------------------------------------------------------
    def publish_tracking(self, update: TrackingUpdate, model: ModelInfo) -> bool:
        """Everything the tracking stage decided for one frame (or expiry check), in that order:
        detections, presence events, snapshots, object events, zone occupancy, line counts."""
        ok = True
        msgs = self.cfg.messages
        if update.result is not None:
            ok = self.publish_detections(update.result, model)
        for ev in update.presence:
            self.publish_event(ev)
        for shot in update.snapshots:  # before the events that say has_snapshot
            self.publish_snapshot(shot)
        for obj in update.objects:
            self._emit("object", msgs.objects, obj.camera, functools.partial(m.build_object_event, obj))
        for occ in update.occupancy:
            build_occ = functools.partial(m.build_occupancy, occ)
            self._emit("occupancy", msgs.occupancy, occ.camera, build_occ, zone=occ.zone)
        for count in update.lines:
            build_line = functools.partial(m.build_line_count, count)
            self._emit("line_count", msgs.lines, count.camera, build_line, line=count.line)
        return ok

    def publish_snapshot(self, shot: Snapshot) -> bool:
        """A JPEG, retained, on <camera>/<label>/snapshot (binary: no envelope, never durable)."""
        cls = self.cfg.messages.snapshot
        if not self._started or self._stopped or not cls.enabled:
            return False
        if len(shot.jpeg) > self.cfg.max_payload_bytes:
            self._count("oversize")
            self._count("dropped")
            self._warn.warning(
                "oversize-snapshot",
                "MQTT: snapshot of %d bytes exceeds max_payload_bytes=%d: not sent (lower "
                "tracking.snapshots.jpeg_quality or use mode: crop)",
                len(shot.jpeg),
                self.cfg.max_payload_bytes,
            )
            return False
        try:
            return self._send_now(
                self.topic(cls, shot.camera, label=shot.label), shot.jpeg, cls.qos, cls.retain
            )
        except Exception as exc:
            self._count("errors")
            self._warn.error("emit-snapshot", "MQTT: cannot publish a snapshot: %s", exc)
            return False

    def publish_event(self, event: PresenceEvent) -> bool:
        return self._emit(
            "events", self.cfg.messages.events, event.camera, lambda env: m.build_event(event, env)
        )

    def publish_stats(self, payload: Mapping[str, Any]) -> bool:
        """``payload``: {"cameras": {name: {state, frames_in, frames_out, dropped, ...}},
        "latency_ms": {stage: {p50, p95, n}}, optional "interval_s", "uptime_s", "model", "power",
        "throttle", "config_error"}; other keys go under "extra". The publisher sets "mqtt" itself
        (its own counters)."""
        counters = self.status_payload()
        known = {
            "cameras",
            "latency_ms",
            "interval_s",
            "uptime_s",
            "model",
            "power",
            "throttle",
            "config_error",
        }
        extra = {k: v for k, v in payload.items() if k not in known and k not in ("mqtt", "extra")}
        extra.update(payload.get("extra") or {})
        return self._emit(
            "stats",
            self.cfg.messages.stats,
            None,
            lambda env: m.build_stats(
                env,
                cameras=payload.get("cameras", {}),
                latency_ms=payload.get("latency_ms", {}),
                mqtt=counters,
                interval_s=payload.get("interval_s"),
                uptime_s=payload.get("uptime_s"),
                extra=extra or None,
                model=payload.get("model"),
                power=payload.get("power"),
                throttle=payload.get("throttle"),
                config_error=payload.get("config_error"),
            ),
        )

    def publish_telemetry(self, payload: Any, source: Optional[str] = None) -> bool:
        """``payload``: the telemetry reader's readings (dict or dataclass), sent as ``readings``."""
        if source is None and isinstance(payload, Mapping) and isinstance(payload.get("source"), str):
            source = payload["source"]  # Reading.to_payload() names its reader
        return self._emit(
            "telemetry",
            self.cfg.messages.telemetry,
            None,
            lambda env: m.build_telemetry(env, payload, source),
        )

    def last_durable_outcome(self) -> Optional[str]:
        """What the outbox did with this thread's last durable message: "committed", "memory" (the
        store is failing: not persisted), "dropped", "refused", "timeout" or "queued" (for tools that
        must tell a committed message from one held in memory only, such as the crash torture)."""
        return getattr(self._last, "outcome", None)

    def publish_retained(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """A retained message on an absolute topic, outside the numbered streams (Home Assistant
        discovery and state); an empty payload clears what the broker retains there."""
        if not self._started or self._stopped:
            return False
        return self._send_now(topic, payload, qos, True)

    # -- status --------------------------------------------------------------------------------
    def _queued(self) -> int:
        with self._lock:
            return sum(1 for i in self._nd_infos if not is_published(i))

    def status_payload(self) -> Dict[str, Any]:
        """The counters as published in the stats message's ``mqtt`` object."""
        return self.status().as_dict(full=False)

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> PublisherStatus:
        ob = self.outbox.stats()
        with self._lock:
            c = dict(self._counts)
        err = self._last_error
        if self.outbox.failure is not None:
            err = f"outbox writer failed: {self.outbox.failure}"
        return PublisherStatus(
            connected=self._connected,
            last_error=err,
            sent=c["sent"],
            dropped=c["dropped"],
            queued=self._queued(),
            oversize=c["oversize"],
            errors=c["errors"],
            connects=c["connects"],
            connect_failures=c["connect_failures"],
            outbox_depth=ob.depth,
            outbox_dropped=ob.dropped,
            outbox_not_persisted=ob.not_persisted,
            outbox_rejected=ob.rejected,
            outbox_memory=ob.memory,
            outbox_no_subscribers=ob.no_subscribers,
            outbox_unrouted_retries=ob.unrouted_retries,
            outbox_mode=ob.mode,
            outbox_oldest_age_s=ob.oldest_age_s,
            outbox=ob,
        )
