"""A fleet on one machine: many devices, each with its own MqttPublisher and durable outbox (no
inference), publishing presence events at realistic rates into one mosquitto on loopback; the broker
is restarted mid-run; a group of consumers on an MQTT 5 shared subscription (``$share/<group>/...``)
de-duplicates by message id in one shared store and checks the sequence numbers per (device, stream,
epoch). Prints messages/s through the broker, end-to-end latency (message built -> consumer) p50/p95,
and whether anything the devices accepted was lost.

    python -m edgedet.devtools.fleet --devices 100 --seconds 60      # 4 processes of 25 device threads
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, TextIO, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgedet.devtools.broker import Broker
from edgedet.publish.config import MqttConfig
from edgedet.publish.messages import percentiles
from edgedet.publish.mqtt import MqttPublisher
from edgedet.tracking.values import PresenceEvent

PREFIX = "fleet"
GROUP = "fleet-consumers"
# the devices keep a durable message the broker discarded for lack of subscribers ("No matching
# subscribers": a restarted mosquitto 2.0 forgets shared subscriptions until the consumers subscribe
# again) and send it again until a consumer takes it (docs/messages.md, Fleets)
UNROUTED = {"retry": True, "retry_after_s": 1.0, "give_up_after_s": 120.0}


# -- device processes ----------------------------------------------------------------------------
def _device_cfg(port: int, device: str) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "client_id": f"edgedet-{device}",
            "topic_prefix": PREFIX,
            "keepalive_s": 10,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            # a small device: at most 20 unacknowledged (mosquitto's own default Receive Maximum)
            "outbox": {"max_inflight": 20, "unrouted": UNROUTED},
        }
    )


def devices_main(args: argparse.Namespace) -> int:
    """``args.count`` device threads from ``args.first``; prints one JSON line of accepted tokens."""
    accepted: Dict[str, List[int]] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    pubs: List[MqttPublisher] = []
    for k in range(args.first, args.first + args.count):
        device = f"dev{k:04d}"
        pub = MqttPublisher(_device_cfg(args.port, device), device, Path(args.state) / device)
        pub.start()
        pubs.append(pub)
        accepted[device] = []

    def run(index: int, pub: MqttPublisher) -> None:
        rng = random.Random(index)
        mine = accepted[pub.device_id]
        i = 0
        while True:
            # presence events arrive irregularly: exponential gaps around the mean rate
            time.sleep(rng.expovariate(args.rate))
            if time.monotonic() >= stop_at:
                return
            i += 1
            t = time.time()
            kind = "appeared" if i % 2 else "cleared"
            ev = PresenceEvent(f"cam{i % 2}", kind, 0, "person", t, index * 10_000_000 + i, 1, 0.9, t, t)
            if pub.publish_event(ev):
                with lock:
                    mine.append(index * 10_000_000 + i)

    threads = [
        threading.Thread(target=run, args=(args.first + n, p), daemon=True) for n, p in enumerate(pubs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for pub in pubs:
        pub.stop(20.0)  # flushes what the outage left behind
    left = sum(p.outbox.stats().depth for p in pubs)
    totals: Dict[str, int] = {}
    for p in pubs:
        for key, value in p.status().as_dict().items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    print(json.dumps({"accepted": accepted, "undelivered_in_outboxes": left, "status": totals}), flush=True)
    return 0


# -- consumers -----------------------------------------------------------------------------------
class DedupeStore:
    """What a consumer group shares (in production a database or Redis with a TTL): seen message ids,
    and per (device, stream, epoch) the sequence numbers received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Set[str] = set()
        self.seqs: Dict[Tuple[str, str, str], Dict[int, str]] = {}
        self.tokens: Set[int] = set()
        self.latencies_ms: List[Tuple[float, float]] = []  # (built at, ms to the consumer)
        self.received = 0
        self.duplicates = 0
        self.conflicts = 0
        self.per_consumer: Dict[str, int] = {}

    def feed(self, consumer: str, msg: Dict[str, Any], now: float) -> None:
        key = (str(msg["device_id"]), f"{msg.get('camera')}/{msg['type']}", str(msg["epoch"]))
        with self.lock:
            self.received += 1
            self.per_consumer[consumer] = self.per_consumer.get(consumer, 0) + 1
            if msg["id"] in self.ids:
                self.duplicates += 1  # QoS 1 re-delivery or an outbox replay: same id, drop it
                return
            self.ids.add(msg["id"])
            seen = self.seqs.setdefault(key, {})
            if seen.get(msg["seq"], msg["id"]) != msg["id"]:
                self.conflicts += 1
            seen[msg["seq"]] = msg["id"]
            self.tokens.add(int(msg["frame_seq"]))
            built = msg["publish_ts_ms"] / 1000.0
            self.latencies_ms.append((built, (now - built) * 1000.0))

    def gaps(self) -> int:
        with self.lock:
            return sum(max(s) - min(s) + 1 - len(s) for s in self.seqs.values())


class Consumer:
    def __init__(self, name: str, port: int, store: DedupeStore) -> None:
        self.name, self.store = name, store
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.2, 1.0)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # a persistent session: the broker queues while it is away
        self.client.connect_async("127.0.0.1", port, 30, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(f"$share/{GROUP}/{PREFIX}/+/+/events", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.store.feed(self.name, json.loads(msg.payload), time.time())

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the run -------------------------------------------------------------------------------------
@dataclass
class FleetResult:
    devices: int
    processes: int
    seconds: float
    rate_per_device: float
    accepted: int
    delivered: int
    received: int
    duplicates: int
    lost: int
    # of the lost: acknowledged by the broker with "No matching subscribers" and discarded by it (a
    # restarted mosquitto 2.0 forgets shared subscriptions until their members subscribe again)
    discarded_by_broker: int
    gaps: int
    conflicts: int
    left_in_outboxes: int
    msgs_per_s: float
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    latency_p95_outside_restart_ms: Optional[float]
    per_consumer: Dict[str, int]
    broker_down_s: float
    device_totals: Dict[str, int]  # the devices' publisher counters, summed

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def run_fleet(
    devices: int = 100,
    processes: int = 4,
    seconds: float = 60.0,
    rate: float = 1.0,
    consumers: int = 3,
    down_s: float = 3.0,
    out: Optional[TextIO] = None,
) -> FleetResult:
    """``rate``: mean presence events/s per device. The broker is stopped at half time for ``down_s``."""
    stream = out if out is not None else sys.stdout
    with tempfile.TemporaryDirectory(prefix="edgedet-fleet-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker", persistence=True).start()
        store = DedupeStore()
        group = [Consumer(f"consumer-{k + 1}", broker.port, store) for k in range(consumers)]
        time.sleep(1.0)  # subscriptions in place
        per = [devices // processes + (1 if k < devices % processes else 0) for k in range(processes)]
        procs = []
        first = 0
        for n in per:
            cmd = [sys.executable, "-m", "edgedet.devtools.fleet", "--devices-proc", "--first", str(first)]
            cmd += ["--count", str(n), "--port", str(broker.port), "--state", str(root / "state")]
            cmd += ["--rate", str(rate), "--seconds", str(seconds)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
            first += n
        t0 = time.time()
        time.sleep(seconds / 2)
        stream.write(f"  {time.time() - t0:.0f} s: {store.received} received; restarting the broker\n")
        stream.flush()
        down_from = time.time()
        broker.stop()
        time.sleep(down_s)
        broker.start()
        down_to = time.time()
        accepted: Set[int] = set()
        left = 0
        device_totals: Dict[str, int] = {}
        for p in procs:
            text, _ = p.communicate(timeout=seconds + 120)
            lines = [ln for ln in text.splitlines() if ln.startswith("{")]
            if lines:
                data = json.loads(lines[-1])
                left += int(data["undelivered_in_outboxes"])
                for key, value in data["status"].items():
                    device_totals[key] = device_totals.get(key, 0) + value
                for tokens in data["accepted"].values():
                    accepted.update(tokens)
            else:
                stream.write(f"  a device process answered nothing (exit {p.returncode})\n")
        # until the consumers are quiet for 2 s
        seen, quiet = -1, time.monotonic()
        while time.monotonic() - quiet < 2.0:
            if store.received != seen:
                seen, quiet = store.received, time.monotonic()
            time.sleep(0.2)
        elapsed = time.time() - t0
        for c in group:
            c.stop()
        broker.stop()
    with store.lock:
        lat = [ms for _, ms in store.latencies_ms]
        calm = [ms for built, ms in store.latencies_ms if not (down_from - 1.0 <= built <= down_to + 5.0)]
        delivered = len(store.ids)
        lost = len(accepted - store.tokens)
    pct, calm_pct = percentiles(lat), percentiles(calm)
    res = FleetResult(
        devices=devices,
        processes=processes,
        seconds=round(elapsed, 1),
        rate_per_device=rate,
        accepted=len(accepted),
        delivered=delivered,
        received=store.received,
        duplicates=store.duplicates,
        lost=lost,
        discarded_by_broker=device_totals.get("outbox_no_subscribers", 0),
        gaps=store.gaps(),
        conflicts=store.conflicts,
        left_in_outboxes=left,
        msgs_per_s=round(store.received / elapsed, 1),
        latency_p50_ms=pct["p50"],
        latency_p95_ms=pct["p95"],
        latency_p95_outside_restart_ms=calm_pct["p95"],
        per_consumer=dict(store.per_consumer),
        broker_down_s=down_s,
        device_totals=device_totals,
    )
    _print(res, stream)
    return res


def _print(r: FleetResult, out: TextIO) -> None:
    lines = [
        f"fleet: {r.devices} devices in {r.processes} processes, {r.rate_per_device} events/s each, "
        f"{r.seconds} s, broker restarted at half time ({r.broker_down_s} s down)",
        f"  devices: outbox.unrouted.retry on (re-send every {UNROUTED['retry_after_s']} s what the broker "
        f"discarded for lack of subscribers, give up after {UNROUTED['give_up_after_s']:.0f} s); "
        f"re-sends: {r.device_totals.get('outbox_unrouted_retries', 0)}",
        f"  through the broker: {r.received} messages = {r.msgs_per_s} msgs/s; per consumer {r.per_consumer}",
        f"  accepted by the devices: {r.accepted}; delivered (distinct ids): {r.delivered}; "
        f"duplicates dropped by id: {r.duplicates}",
        f"  lost: {r.lost}, of which the broker acknowledged and discarded (PUBACK 'No matching "
        f"subscribers'): {r.discarded_by_broker}; lost by edgedet: {r.lost - r.discarded_by_broker}",
        f"  gaps: {r.gaps}; seqs reused with another id: {r.conflicts}; "
        f"left in outboxes at the end: {r.left_in_outboxes}",
        "  devices: " + ", ".join(f"{k} {v}" for k, v in sorted(r.device_totals.items()) if v),
        f"  end-to-end (built -> consumer): p50 {r.latency_p50_ms} ms, p95 {r.latency_p95_ms} ms; "
        f"p95 away from the restart {r.latency_p95_outside_restart_ms} ms",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--processes", type=int, default=4, help="device processes (threads share them)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1.0, help="mean presence events/s per device")
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--down", type=float, default=3.0, help="seconds the broker is down at half time")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--devices-proc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--state", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.devices_proc:
        return devices_main(args)
    res = run_fleet(args.devices, args.processes, args.seconds, args.rate, args.consumers, args.down)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    ours = res.lost - res.discarded_by_broker
    return 0 if ours == 0 and res.gaps == res.discarded_by_broker and res.conflicts == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
