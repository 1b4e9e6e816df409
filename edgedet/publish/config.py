"""MQTT connection, per-message-class settings and the durable outbox."""

from typing import Optional

from pydantic import Field, model_validator
from typing_extensions import Literal

from edgedet.configbase import Strict


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
    topic: str  # relative to <topic_prefix>/<device_id>/; "{camera}" is replaced by the camera name
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    durable: bool = False


class EventsConfig(Strict):
    """Presence events: `appeared` when a class is seen in K of the last N frames, `cleared` after T s."""

    min_frames: int = Field(default=3, ge=1)  # K
    window_frames: int = Field(default=5, ge=1)  # N
    clear_after_s: float = Field(default=5.0, gt=0)  # T
    # at most one event per camera and class in this many seconds
    min_interval_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _k_le_n(self) -> "EventsConfig":
        if self.min_frames > self.window_frames:
            raise ValueError("min_frames must not exceed window_frames")
        return self


class MessagesConfig(Strict):
    detections: MessageClass = MessageClass(topic="{camera}/detections", qos=0)
    events: MessageClass = MessageClass(topic="{camera}/events", qos=1, durable=True)
    stats: MessageClass = MessageClass(topic="stats", qos=0)
    telemetry: MessageClass = MessageClass(topic="telemetry", qos=0)
    status: MessageClass = MessageClass(topic="status", qos=1, retain=True)


class OutboxConfig(Strict):
    """The SQLite (WAL) store that keeps durable messages until the broker acknowledges them."""

    enabled: bool = True
    path: Optional[str] = None  # None: <state_dir>/outbox.sqlite
    max_messages: int = Field(default=100_000, gt=0)
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    when_full: Literal["drop_oldest", "drop_new"] = "drop_oldest"
    # unacknowledged messages in flight at once while replaying
    max_inflight: int = Field(default=100, gt=0)


class MqttConfig(Strict):
    enabled: bool = True
    host: str = "localhost"
    port: Optional[int] = Field(default=None, gt=0, le=65535)  # None: 1883, or 8883 with TLS
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: Optional[str] = None  # None: edgedet-<device_id>
    username: Optional[str] = None
    # the password is never stored here: it is read from this environment variable, or from the file
    # $CREDENTIALS_DIRECTORY/<password_credential> (systemd LoadCredential=)
    password_env: str = "EDGEDET_MQTT_PASSWORD"
    password_credential: str = "mqtt-password"
    tls: Optional[TlsConfig] = None
    keepalive_s: int = Field(default=30, ge=5)
    clean_start: bool = False
    session_expiry_s: int = Field(default=3600, ge=0)
    topic_prefix: str = Field(default="edgedet", pattern=r"^[^#+]+$")
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    # non-durable messages buffered while the broker is away (paho's queue); oldest are dropped beyond
    max_queued: int = Field(default=1000, gt=0)
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    messages: MessagesConfig = MessagesConfig()
    events: EventsConfig = EventsConfig()
    outbox: OutboxConfig = OutboxConfig()

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883
