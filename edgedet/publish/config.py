"""MQTT connection, per-message-class settings, presence events and the durable outbox."""

from typing import Optional

from pydantic import Field, model_validator
from typing_extensions import Literal

from edgedet.configbase import Strict

# presence events are decided by the tracking stage; their settings stay under mqtt.events
from edgedet.tracking.config import PresenceConfig as EventsConfig

# MQTT's own limit on one packet's remaining length
MQTT_MAX_PAYLOAD = 268_435_455


class TlsConfig(Strict):
    ca_file: Optional[str] = None  # None: the system's CA store
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    insecure: bool = False  # skip host-name verification (testing only)

    @model_validator(mode="after")
    def _cert_needs_key(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MessageClass(Strict):
    """Topic, QoS and retain of one class of message; durable ones go through the on-disk outbox."""

    enabled: bool = True
    # relative to <topic_prefix>/<device_id>/; "{camera}" is replaced by the camera name
    topic: str = Field(
        pattern=r"^[^#+/\x00-\x1f\x7f][^#+\x00-\x1f\x7f]*[^#+/\x00-\x1f\x7f]$|^[^#+/\x00-\x1f\x7f]$"
    )
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    durable: bool = False

    @model_validator(mode="after")
    def _durable_needs_ack(self) -> "MessageClass":
        if self.durable and self.qos == 0:
            raise ValueError("durable messages need qos 1 or 2 (QoS 0 is never acknowledged by the broker)")
        return self


# what the topic of each tracking message class must name (one retained state per zone, line, label)
_PLACEHOLDERS = {
    "objects": ("{camera}",),
    "occupancy": ("{camera}", "{zone}"),
    "lines": ("{camera}", "{line}"),
    "snapshot": ("{camera}", "{label}"),
}


class MessagesConfig(Strict):
    detections: MessageClass = MessageClass(topic="{camera}/detections", qos=0)
    events: MessageClass = MessageClass(topic="{camera}/events", qos=1, durable=True)
    # the tracking stage: object lifecycle events, zone occupancy and line counts ("{zone}"/"{line}"
    # are replaced by the name), and the best picture of the latest object of each label (binary JPEG)
    objects: MessageClass = MessageClass(topic="{camera}/objects", qos=1, durable=True)
    occupancy: MessageClass = MessageClass(topic="{camera}/zones/{zone}", qos=1, retain=True)
    lines: MessageClass = MessageClass(topic="{camera}/lines/{line}", qos=1, retain=True)
    snapshot: MessageClass = MessageClass(topic="{camera}/{label}/snapshot", qos=0, retain=True)
    stats: MessageClass = MessageClass(topic="stats", qos=0)
    telemetry: MessageClass = MessageClass(topic="telemetry", qos=0)
    # availability: plain "online"/"offline", retained, with the last will
    status: MessageClass = MessageClass(topic="status", qos=1, retain=True)

    @model_validator(mode="after")
    def _topics(self) -> "MessagesConfig":
        for name, needs in _PLACEHOLDERS.items():
            for placeholder in needs:
                if placeholder not in getattr(self, name).topic:
                    raise ValueError(f"{name}.topic must contain {placeholder}")
        for name in ("detections", "events"):
            if "{camera}" not in getattr(self, name).topic:
                raise ValueError(f"{name}.topic must contain {{camera}} (one stream per camera)")
        for name in ("stats", "telemetry", "status"):
            if "{camera}" in getattr(self, name).topic:
                raise ValueError(f"{name}.topic is per device and cannot contain {{camera}}")
        if self.snapshot.durable:
            raise ValueError("snapshot cannot be durable: it is a retained picture, only the latest counts")
        if self.status.durable:
            raise ValueError("status cannot be durable: it is a retained state with a last will")
        topics = [self.detections.topic, self.events.topic, self.stats.topic, self.telemetry.topic]
        topics += [self.status.topic, self.objects.topic, self.occupancy.topic, self.lines.topic]
        topics.append(self.snapshot.topic)
        if len(set(topics)) != len(topics):
            raise ValueError("every message class needs its own topic")
        return self


class UnroutedConfig(Strict):
    """Durable messages the broker acknowledged with "No matching subscribers" (MQTT 5 reason 0x10):
    it had nobody to give them to and discarded them."""

    # True: keep such a message and send it again (with the same id and seq; the ones behind it wait,
    # so that order holds) until a subscriber takes it or give_up_after_s passes. Only for a broker
    # that forgets subscriptions for a while (mosquitto 2.0 after a restart forgets shared ones): if
    # nobody ever subscribes, every durable message waits give_up_after_s.
    retry: bool = False
    retry_after_s: float = Field(default=2.0, gt=0, le=3600)
    # counted from the message's creation; then it is deleted and counted as outbox_no_subscribers
    give_up_after_s: float = Field(default=300.0, gt=0)


class OutboxConfig(Strict):
    """The SQLite (WAL) store that keeps durable messages until the broker acknowledges them."""

    # False: durable classes are published straight through paho (kept in memory only)
    enabled: bool = True
    path: Optional[str] = None  # None: <state_dir>/outbox.sqlite
    max_messages: int = Field(default=100_000, gt=0)
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    when_full: Literal["drop_oldest", "drop_new"] = "drop_oldest"
    # unacknowledged messages in flight at once while replaying
    max_inflight: int = Field(default=100, gt=0, le=10_000)
    # full: fsync the WAL on every (group) commit, survives power loss; normal: survives a process
    # crash but the last commits may be lost on power loss
    synchronous: Literal["full", "normal"] = "full"
    # put() returns only after the group commit that holds its message; beyond this it returns False
    # (counted as commit_timeouts; the message may still be committed and delivered later)
    commit_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # used only while the store cannot be written (unwritable folder, disk full, corrupt file)
    memory_max_messages: int = Field(default=10_000, gt=0)
    memory_max_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    unrouted: UnroutedConfig = Field(default_factory=UnroutedConfig)


class MqttConfig(Strict):
    enabled: bool = True
    host: str = Field(default="localhost", min_length=1)
    port: Optional[int] = Field(default=None, gt=0, le=65535)  # None: 1883, or 8883 with TLS
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: Optional[str] = Field(default=None, min_length=1, max_length=128)  # None: edgedet-<device_id>
    username: Optional[str] = None
    # the password is never stored here: it is read from this environment variable, or from the file
    # $CREDENTIALS_DIRECTORY/<password_credential> (systemd LoadCredential=)
    password_env: str = "EDGEDET_MQTT_PASSWORD"
    password_credential: str = "mqtt-password"
    tls: Optional[TlsConfig] = None
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    # MQTT 5: clean_start and session expiry; MQTT 3.1.1: clean_start is the clean-session flag
    clean_start: bool = False
    session_expiry_s: int = Field(default=3600, ge=0, le=4_294_967_295)
    # no wildcards, no leading "$" or "/", no control characters (they would reach every subscriber)
    topic_prefix: str = Field(
        default="edgedet",
        pattern=r"^[^#+/$\x00-\x1f\x7f][^#+\x00-\x1f\x7f]*[^#+/\x00-\x1f\x7f]$|^[^#+/$\x00-\x1f\x7f]$",
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    # non-durable messages buffered while the broker is away (paho's queue); beyond it they are dropped
    max_queued: int = Field(default=1000, gt=0)
    # larger messages are refused (logged and counted); brokers often cap at 256 KiB (AWS IoT: 128 KiB)
    max_payload_bytes: int = Field(default=256 * 1024, ge=256, le=MQTT_MAX_PAYLOAD)
    messages: MessagesConfig = MessagesConfig()
    events: EventsConfig = EventsConfig()
    outbox: OutboxConfig = OutboxConfig()

    @model_validator(mode="after")
    def _backoff(self) -> "MqttConfig":
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883
