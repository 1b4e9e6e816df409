"""`edgedet watch`: subscribe to what edgedet publishes, print one line per message, and with
``check`` report per stream the gaps, duplicates and out-of-order messages (the subscriber-side proof).

A stream is one (device, camera, message type) — every stream has its own ``seq`` counter, and every
``epoch`` of it is tracked on its own (a device may replay messages of an older epoch after a newer
one has started). Within an epoch: ``seq`` = last + 1 is in order; larger leaves a gap (seqs counted
missing); a seq that fills a gap is out of order; any other seq at or below the highest seen is a
duplicate (same ``id``) or a conflict (different ``id``: numbering reused, a bug).

Everything a device sends is printed with control characters escaped: a device name or class name
must not be able to drive the terminal (escape sequences).
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, TextIO, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgedet.publish.config import MessagesConfig, TlsConfig
from edgedet.publish.schema import MessageValidator

log = logging.getLogger(__name__)

# gaps larger than this are counted but not remembered seq by seq
_MAX_TRACKED_MISSING = 100_000
_IDS_KEPT = 20_000

OK, FIRST, GAP, LATE, DUPLICATE, CONFLICT, RESET = (
    "ok",
    "first",
    "gap",
    "late",
    "duplicate",
    "conflict",
    "reset",
)


# message class (config name) -> message type (the JSON "type" and the last part of a stream key)
CLASS_TYPES = {
    "detections": "detections",
    "events": "event",
    "objects": "object",
    "occupancy": "occupancy",
    "lines": "line_count",
    "stats": "stats",
    "telemetry": "telemetry",
}
# C0 and C1 control characters and DEL
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN`` (safe to print to a terminal)."""
    return text.translate(_CONTROL)


def _type_of(stream: str) -> str:
    """The message type in a stream key (device[/camera]/type[/zone or line])."""
    parts = stream.split("/")
    known = set(CLASS_TYPES.values())
    return next((p for p in reversed(parts) if p in known), parts[-1])


def durable_message_types(messages: Optional[MessagesConfig] = None) -> List[str]:
    """Message types whose gaps are losses: the classes the device's config makes durable."""
    cfg = messages if messages is not None else MessagesConfig()
    return [t for name, t in CLASS_TYPES.items() if getattr(cfg, name).durable]


@dataclass
class StreamReport:
    key: str
    epoch: str = ""  # "" in the per-stream totals of several epochs
    received: int = 0
    unique: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    conflicts: int = 0
    resets: int = 0
    first_seq: Optional[int] = None
    last_seq: Optional[int] = None
    missing_untracked: int = 0
    missing: Set[int] = field(default_factory=set)

    @property
    def gaps(self) -> int:
        """Sequence numbers never received (so far) between the first and the highest seen."""
        return len(self.missing) + self.missing_untracked


class SeqChecker:
    """Feed decoded messages; thread-safe. Tracks every (stream, epoch) on its own."""

    def __init__(self) -> None:
        self._tracks: Dict[Tuple[str, str], StreamReport] = {}
        self._epochs: Dict[str, List[str]] = {}  # stream -> its epochs, in order of first arrival
        self._ids: Dict[Tuple[str, str], collections.OrderedDict[int, str]] = {}
        self._order: Dict[str, List[int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def stream_of(msg: Mapping[str, Any]) -> str:
        parts = [str(msg.get("device_id", "?"))]
        if msg.get("camera"):
            parts.append(str(msg["camera"]))
        parts.append(str(msg.get("type", "?")))
        # occupancy and line counts are numbered per zone / line (publish.messages.stream_key)
        for name in ("zone", "line"):
            if isinstance(msg.get(name), str):
                parts.append(str(msg[name]))
        return "/".join(parts)

    def feed(self, msg: Mapping[str, Any]) -> str:
        seq, epoch, mid = msg.get("seq"), str(msg.get("epoch", "")), str(msg.get("id", ""))
        if not isinstance(seq, int):
            return CONFLICT
        key = self.stream_of(msg)
        track = (key, epoch)
        with self._lock:
            st = self._tracks.get(track)
            if st is None:
                epochs = self._epochs.setdefault(key, [])
                verdict = RESET if epochs else FIRST
                epochs.append(epoch)
                st = self._tracks[track] = StreamReport(key, epoch, first_seq=seq, last_seq=seq)
                self._ids[track] = collections.OrderedDict()
                self._accept(track, st, seq, mid)
                return verdict
            st.received += 1
            last = st.last_seq if st.last_seq is not None else seq
            verdict = OK
            if seq == last + 1:
                st.last_seq = seq
            elif seq > last + 1:
                n = seq - last - 1
                if len(st.missing) + n <= _MAX_TRACKED_MISSING:
                    st.missing.update(range(last + 1, seq))
                else:
                    st.missing_untracked += n
                st.last_seq = seq
                verdict = GAP
            elif seq in st.missing:
                st.missing.discard(seq)
                st.out_of_order += 1
                verdict = LATE
            else:
                if self._ids[track].get(seq, mid) != mid:
                    st.conflicts += 1
                    return CONFLICT
                st.duplicates += 1
                return DUPLICATE
            st.received -= 1
            self._accept(track, st, seq, mid)
            return verdict

    def _accept(self, track: Tuple[str, str], st: StreamReport, seq: int, mid: str) -> None:
        st.received += 1
        st.unique += 1
        ids = self._ids[track]
        ids[seq] = mid
        if len(ids) > _IDS_KEPT:
            ids.popitem(last=False)
        self._order.setdefault(track[0], []).append(seq)

    def report_epochs(self) -> Dict[Tuple[str, str], StreamReport]:
        """Every (stream, epoch) on its own."""
        with self._lock:
            return {k: _copy(v) for k, v in self._tracks.items()}

    def report(self) -> Dict[str, StreamReport]:
        """Per stream: the totals over its epochs; seqs, first/last and ``missing`` of the latest one
        (the gaps of older epochs count in ``missing_untracked``)."""
        with self._lock:
            out: Dict[str, StreamReport] = {}
            for key, epochs in self._epochs.items():
                tracks = [self._tracks[(key, e)] for e in epochs]
                latest = tracks[-1]
                tot = StreamReport(key, latest.epoch if len(tracks) == 1 else "", resets=len(tracks) - 1)
                for t in tracks:
                    tot.received += t.received
                    tot.unique += t.unique
                    tot.duplicates += t.duplicates
                    tot.out_of_order += t.out_of_order
                    tot.conflicts += t.conflicts
                    tot.missing_untracked += t.gaps if t is not latest else t.missing_untracked
                tot.first_seq, tot.last_seq = latest.first_seq, latest.last_seq
                tot.missing = set(latest.missing)
                out[key] = tot
            return out

    def unique_seqs(self, key: str) -> List[int]:
        """Sequence numbers of the stream's unique messages in arrival order, all epochs (for tests and
        tools)."""
        with self._lock:
            return list(self._order.get(key, []))


def _copy(st: StreamReport) -> StreamReport:
    out = StreamReport(**{k: v for k, v in st.__dict__.items() if k != "missing"})
    out.missing = set(st.missing)
    return out


@dataclass
class WatchReport:
    messages: int = 0
    by_type: Dict[str, int] = field(default_factory=dict)
    not_json: int = 0
    invalid: int = 0
    status: Dict[str, str] = field(default_factory=dict)  # device -> online/offline
    streams: Dict[str, StreamReport] = field(default_factory=dict)
    connected: bool = False
    last_error: Optional[str] = None

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.streams.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.streams.values())

    @property
    def out_of_order(self) -> int:
        return sum(s.out_of_order for s in self.streams.values())

    @property
    def conflicts(self) -> int:
        return sum(s.conflicts for s in self.streams.values())

    def problems(self, durable_types: Optional[Sequence[str]] = None) -> List[str]:
        """What a `--check` run should fail on: invalid or non-JSON messages, reused sequence numbers,
        and gaps in durable streams (``durable_types``: message types, default those durable in the default
        config; gaps in QoS 0 streams are drops, already counted by the device)."""
        types = durable_message_types() if durable_types is None else list(durable_types)
        out = []
        if self.invalid or self.not_json:
            out.append(f"{self.invalid} invalid and {self.not_json} non-JSON message(s)")
        for key, s in sorted(self.streams.items()):
            if s.conflicts:
                out.append(f"{key}: {s.conflicts} sequence number(s) reused with another id")
            if s.gaps and _type_of(key) in types:
                out.append(f"{key}: {s.gaps} message(s) missing")
        return out


def format_message(topic: str, msg: Any) -> str:
    """One human line for a decoded message (dict) or a status text; control characters escaped."""
    return printable(_format(topic, msg))


def _format(topic: str, msg: Any) -> str:
    now = time.strftime("%H:%M:%S")
    if not isinstance(msg, dict):
        return f"{now} {topic} {msg}"
    kind = msg.get("type", "?")
    where = "/".join(str(x) for x in (msg.get("device_id"), msg.get("camera")) if x)
    head = f"{now} {where} {kind} seq={msg.get('seq')}"
    if kind == "detections":
        names = collections.Counter(str(d.get("class_name")) for d in msg.get("detections", []))
        classes = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in names.most_common())
        lat = (msg.get("latency_ms") or {}).get("capture_to_publish")
        tail = f" {lat:.0f} ms" if isinstance(lat, (int, float)) else ""
        return f"{head} frame={msg.get('frame_seq')} n={msg.get('count')} {classes}{tail}".rstrip()
    if kind == "event":
        return f"{head} {msg.get('event')} {msg.get('class_name')} (count {msg.get('count')})"
    if kind == "stats":
        cams = msg.get("cameras") or {}
        parts = [
            f"{n}: {c.get('state')} in={c.get('frames_in')} out={c.get('frames_out')} "
            f"dropped={c.get('dropped')}"
            for n, c in cams.items()
        ]
        mq = msg.get("mqtt") or {}
        parts.append(f"outbox={mq.get('outbox_depth')} dropped={mq.get('dropped')}")
        return f"{head} " + "; ".join(parts)
    if kind == "telemetry":
        return f"{head} {msg.get('source')} {json.dumps(msg.get('readings'), separators=(',', ':'))[:160]}"
    return f"{head} {json.dumps(msg)[:160]}"


def format_report(report: WatchReport) -> str:
    lines = [
        f"{'stream':40} {'received':>9} {'unique':>7} {'dups':>5} {'gaps':>5} {'late':>5} "
        f"{'resets':>6} {'seq':>15}"
    ]
    for key in sorted(report.streams):
        s = report.streams[key]
        span = f"{s.first_seq}..{s.last_seq}"
        lines.append(
            f"{key:40} {s.received:9d} {s.unique:7d} {s.duplicates:5d} {s.gaps:5d} {s.out_of_order:5d} "
            f"{s.resets:6d} {span:>15}"
        )
    lines.append(
        f"total: {report.messages} messages, {report.gaps} missing, {report.duplicates} duplicate(s), "
        f"{report.out_of_order} out of order, {report.conflicts} conflict(s), {report.invalid} invalid, "
        f"{report.not_json} not JSON"
    )
    return "\n".join(lines)


class Watcher:
    """The subscriber behind ``watch``; usable from tests (start/stop/report)."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 1883,
        prefix: str = "edgedet",
        *,
        check: bool = False,
        validate: bool = False,
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls: Optional[TlsConfig] = None,
        protocol: str = "5",
        qos: int = 1,
        share_group: Optional[str] = None,
        topic: str = "#",
        client_id: Optional[str] = None,
        session_expiry_s: int = 0,
        out: Optional[TextIO] = None,
        quiet: bool = False,
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.check = check
        self.quiet = quiet
        self.out = out if out is not None else sys.stdout
        self.qos = qos
        # e.g. topic="+/+/events" for every camera's events of every device
        self.topic = f"{prefix}/{topic}" if not share_group else f"$share/{share_group}/{prefix}/{topic}"
        self.checker = SeqChecker()
        self.report_data = WatchReport()
        self.messages: List[Any] = []  # decoded messages, kept only with keep=True
        self.keep = False
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._validator: Any = None
        if validate:
            self._validator = MessageValidator()
        persistent = client_id is not None and session_expiry_s > 0
        if protocol == "5":
            self.client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv5
            )
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(session_expiry_s)
            self._connect_kwargs: Dict[str, Any] = {"clean_start": not persistent, "properties": props}
        else:
            self.client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id or "",
                protocol=mqtt.MQTTv311,
                clean_session=not persistent,
            )
            self._connect_kwargs = {}
        self.client.reconnect_delay_set(1, 5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            self.client.tls_insecure_set(tls.insecure)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail

    def start(self) -> Watcher:
        self.client.connect_async(self.host, self.port, 30, **self._connect_kwargs)
        self.client.loop_start()
        return self

    def stop(self) -> WatchReport:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
        return self.report()

    def report(self) -> WatchReport:
        with self._lock:
            self.report_data.streams = self.checker.report()
            return self.report_data

    def _print(self, line: str) -> None:
        if self.quiet:
            return
        try:
            # lines of our own (the report) may span several; each part is escaped
            self.out.write("\n".join(printable(part) for part in line.split("\n")) + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self.report_data.last_error = str(reason_code)
                self._print(f"# broker {self.host}:{self.port} refused the connection: {reason_code}")
                return
            self.report_data.connected = True
            client.subscribe(self.topic, qos=self.qos)
            self._print(f"# connected to {self.host}:{self.port}, subscribed to {self.topic}")
        except Exception as exc:
            log.error("watch on_connect: %s", exc)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self.subscribed.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.report_data.connected = False
        self.subscribed.clear()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.report_data.last_error = "cannot connect"
        self._print(f"# cannot connect to {self.host}:{self.port}; retrying")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self._handle(message.topic, bytes(message.payload))
        except Exception as exc:  # a bad message must not stop the watcher
            log.error("watch: cannot handle a message on %s: %s", message.topic, exc)

    def _handle(self, topic: str, payload: bytes) -> None:
        rep = self.report_data
        decoded: Any
        if topic.endswith("/snapshot"):  # binary JPEG by contract (the tracking stage's snapshots)
            with self._lock:
                rep.messages += 1
                rep.by_type["snapshot"] = rep.by_type.get("snapshot", 0) + 1
            self._print(f"{time.strftime('%H:%M:%S')} {topic} JPEG {len(payload)} bytes")
            return
        text = payload.decode("utf-8", errors="replace")
        if topic.endswith("/status") and not text.startswith("{"):
            decoded = text
            with self._lock:
                rep.messages += 1
                rep.by_type["status"] = rep.by_type.get("status", 0) + 1
                device = topic.split("/")[-2] if topic.count("/") >= 2 else topic
                rep.status[device] = text
        else:
            try:
                decoded = json.loads(text)
            except ValueError:
                with self._lock:
                    rep.messages += 1
                    rep.not_json += 1
                self._print(f"# not JSON on {topic}: {text[:80]!r}")
                return
            with self._lock:
                rep.messages += 1
                kind = str(decoded.get("type", "?")) if isinstance(decoded, dict) else "?"
                rep.by_type[kind] = rep.by_type.get(kind, 0) + 1
        problems = self._validator.errors(decoded) if self._validator is not None else []
        if problems:
            with self._lock:
                rep.invalid += 1
            self._print(f"# INVALID on {topic}: {'; '.join(problems[:3])}")
        verdict = ""
        if isinstance(decoded, dict) and "seq" in decoded:
            v = self.checker.feed(decoded)
            if self.check and v not in (OK, FIRST):
                verdict = f"  <-- {v.upper()}"
        if self.keep:
            with self._lock:
                self.messages.append(decoded)
        self._print(format_message(topic, decoded) + verdict)


def watch(
    host: str = "localhost",
    port: int = 1883,
    prefix: str = "edgedet",
    *,
    check: bool = False,
    validate: bool = False,
    duration: Optional[float] = None,
    max_messages: Optional[int] = None,
    stop: Optional[threading.Event] = None,
    out: Optional[TextIO] = None,
    **kwargs: Any,
) -> WatchReport:
    """Subscribe to ``<prefix>/#`` and print each message until ``duration`` seconds, ``max_messages``,
    ``stop`` is set or Ctrl-C; with ``check`` print the per-stream report at the end. Returns the
    counts. ``kwargs``: username, password, tls (TlsConfig), protocol, qos, share_group, topic, client_id,
    session_expiry_s, quiet (see Watcher)."""
    w = Watcher(host, port, prefix, check=check, validate=validate, out=out, **kwargs).start()
    stop_event = stop or threading.Event()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop_event.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if max_messages is not None and w.report_data.messages >= max_messages:
                break
            stop_event.wait(0.1)
    except KeyboardInterrupt:
        pass
    report = w.stop()
    if check:
        w._print(format_report(report))
    return report
