"""Crash torture for the durable outbox: a producer PROCESS publishes durable events through the real
MqttPublisher and outbox into a real mosquitto, and is SIGKILLed at random moments (seeded), restarted,
while the broker is flapped. The producer appends every message ``put()`` accepted to a side log
(one write per message, straight to the kernel, so a SIGKILL cannot lose it); a persistent subscriber
records everything the broker delivers.

Pass: every message accepted as committed is delivered at least once; within each (stream, epoch) no
sequence number is missing and none is reused with another id; duplicates carry the same id.
Messages accepted while the store was failing (kept in memory only, counted as not_persisted) may be
lost by a kill: they are reported apart, with the gaps they leave.

    python -m edgedet.devtools.torture --kills 300 --seed 1           # the benchmark
    python -m edgedet.devtools.torture --kills 300 --seed 2 --tmpfs 192k   # store on a tmpfs that fills up
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, TextIO, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgedet.devtools.broker import Broker
from edgedet.publish.config import MqttConfig
from edgedet.publish.mqtt import MqttPublisher
from edgedet.publish.outbox import Outbox
from edgedet.publish.outbox_store import COMMITTED
from edgedet.tracking.values import PresenceEvent

PREFIX = "torture"
DEVICE = "dev1"
# a producer's message numbers: run * RUN_SPAN + thread * THREAD_SPAN + i (unique across restarts)
RUN_SPAN = 10_000_000
THREAD_SPAN = 1_000_000


# -- the producer process ------------------------------------------------------------------------
def _producer_cfg(port: int) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": PREFIX,
            "keepalive_s": 5,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "messages": {"detections": {"topic": "{camera}/detections", "enabled": False}},
            "outbox": {"max_messages": 1_000_000, "max_bytes": 1 << 30, "commit_timeout_s": 5.0},
        }
    )


def producer_main(args: argparse.Namespace) -> int:
    """Publish until killed (or, with --drain, until everything stored is acknowledged)."""
    cfg = _producer_cfg(args.port)
    state = Path(args.state)
    outbox = Outbox(cfg.outbox, state / "outbox.sqlite", retry_store_s=args.retry_store_s)
    pub = MqttPublisher(cfg, DEVICE, state, outbox=outbox)
    pub.start()
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    if args.drain:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (pub.connected and pub.outbox.stats().depth == 0):
            time.sleep(0.05)
        ok = pub.outbox.stats().depth == 0
        pub.stop(10.0)
        print("drained" if ok else "not drained", flush=True)
        return 0 if ok else 1

    pad = "x" * args.pad

    def produce(thread: int) -> None:
        interval = 1.0 / args.rate
        base = args.run * RUN_SPAN + thread * THREAD_SPAN
        due = time.monotonic()
        for i in range(THREAD_SPAN):
            token = base + i
            t = time.time()
            ev = PresenceEvent(f"cam{thread}", "appeared", 0, "person" + pad, t, token, 1, 0.9, t, t)
            if pub.publish_event(ev):
                kind = "C" if pub.last_durable_outcome() == COMMITTED else "M"
                os.write(fd, f"{kind} {token}\n".encode())
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


# -- the persistent subscriber -------------------------------------------------------------------
class Recorder:
    """A persistent MQTT 5 session (QoS 1) that keeps (token, id, stream, epoch, seq) of every message."""

    def __init__(
        self, port: int, topic: str = f"{PREFIX}/+/+/events", client_id: str = "torture-sub"
    ) -> None:
        self.records: List[Tuple[int, str, str, str, int]] = []
        self._lock = threading.Lock()
        self._topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async("127.0.0.1", port, 30, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self._topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        m = json.loads(msg.payload)
        stream = f"{m['device_id']}/{m.get('camera')}/{m['type']}"
        with self._lock:
            self.records.append((int(m["frame_seq"]), str(m["id"]), stream, str(m["epoch"]), int(m["seq"])))

    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def snapshot(self) -> List[Tuple[int, str, str, str, int]]:
        with self._lock:
            return list(self.records)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- checking ------------------------------------------------------------------------------------
@dataclass
class TortureResult:
    kills: int
    broker_flaps: int
    seconds: float
    accepted: int  # committed before put() returned
    accepted_memory_only: int  # accepted while the store failed (not persisted)
    delivered: int  # distinct messages received
    received: int
    duplicates: int  # received again with the same id
    lost: int  # accepted as committed, never delivered
    lost_memory_only: int
    gaps: int  # sequence numbers missing within an epoch
    conflicts: int  # a sequence number delivered with two different ids within an epoch
    epochs: int
    tokens_with_two_ids: int
    tmpfs: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.conflicts == 0 and self.tokens_with_two_ids == 0 and self.gaps == 0

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def check(
    records: List[Tuple[int, str, str, str, int]], committed: Set[int], memory_only: Set[int]
) -> Dict[str, int]:
    ids_of_token: Dict[int, Set[str]] = {}
    seq_ids: Dict[Tuple[str, str], Dict[int, Set[str]]] = {}
    for token, mid, stream, epoch, seq in records:
        ids_of_token.setdefault(token, set()).add(mid)
        seq_ids.setdefault((stream, epoch), {}).setdefault(seq, set()).add(mid)
    delivered = set(ids_of_token)
    unique_ids = {mid for ids in ids_of_token.values() for mid in ids}
    gaps = conflicts = 0
    for seqs in seq_ids.values():
        gaps += max(seqs) - len(seqs)  # every epoch starts at 1
        conflicts += sum(1 for ids in seqs.values() if len(ids) > 1)
    return {
        "delivered": len(unique_ids),
        "received": len(records),
        "duplicates": len(records) - len(unique_ids),
        "lost": len(committed - delivered),
        "lost_memory_only": len(memory_only - committed - delivered),
        "gaps": gaps,
        "conflicts": conflicts,
        "epochs": len({e for (_, e) in seq_ids}),
        "tokens_with_two_ids": sum(1 for ids in ids_of_token.values() if len(ids) > 1),
    }


def _read_log(path: Path) -> Tuple[Set[int], Set[int]]:
    committed: Set[int] = set()
    memory: Set[int] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            kind, _, token = line.partition(" ")
            if token.strip().isdigit():
                (committed if kind == "C" else memory).add(int(token))
    return committed, memory


# -- the harness ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(where: Path, size: Optional[str]) -> Iterator[Optional[str]]:
    """Mount a tmpfs of ``size`` at ``where``; yields None (and does nothing) when not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    if size is None:
        yield None
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if r.returncode != 0:
        yield f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'needs root'}): skipped"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _spawn(
    port: int, state: Path, log: Path, run: int, threads: int, rate: float, pad: int, drain: bool = False
) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "edgedet.devtools.torture",
        "--producer",
        "--port",
        str(port),
        "--state",
        str(state),
        "--log",
        str(log),
        "--run",
        str(run),
        "--threads",
        str(threads),
        "--rate",
        str(rate),
        "--retry-store-s",
        "0.5",
        "--pad",
        str(pad),
    ]
    if drain:
        cmd.append("--drain")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run_torture(
    kills: int = 300,
    seed: int = 1,
    threads: int = 2,
    rate: float = 200.0,
    flap_every: int = 10,
    tmpfs_size: Optional[str] = None,
    workdir: Optional[Path] = None,
    out: Optional[TextIO] = None,
) -> TortureResult:
    """``rate``: messages/s per producer thread. The broker is flapped (clean stop, down 0.2-1.5 s)
    about every ``flap_every`` kills; with a tmpfs store it stays down longer so the file fills."""
    stream = out if out is not None else sys.stdout
    rng = random.Random(seed)
    t0 = time.monotonic()
    flaps = 0
    notes: List[str] = []
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgedet-torture-")))
        state = root / "state"
        skipped = stack.enter_context(_tmpfs(state, tmpfs_size))
        if skipped:
            notes.append(skipped)
            stream.write(f"tmpfs run: {skipped}\n")
            tmpfs_size = None
        log = root / "accepted.log"
        broker = Broker(root / "broker", persistence=True).start()
        stack.callback(broker.stop)
        rec = Recorder(broker.port)
        stack.callback(rec.stop)
        # on a tmpfs: ~2 KB messages and longer outages, so that the unacknowledged backlog fills it
        down_s = (1.0, 4.0) if tmpfs_size else (0.2, 1.5)
        pad = 2000 if tmpfs_size else 0
        for run in range(kills):
            proc = _spawn(broker.port, state, log, run, threads, rate, pad)
            # kill anywhere from the middle of start-up (open, replay) to well into publishing
            time.sleep(rng.uniform(0.2, 1.6))
            if flap_every and rng.random() < 1.0 / flap_every:
                flaps += 1
                broker.stop()
                time.sleep(rng.uniform(*down_s))
                proc.kill()
                proc.wait()
                broker.start()
            else:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            if (run + 1) % 50 == 0:
                stream.write(
                    f"  {run + 1} kills, {rec.count()} messages received, {time.monotonic() - t0:.0f} s\n"
                )
                stream.flush()
        # the last start is not killed: it delivers what the file still holds
        last = _spawn(broker.port, state, log, kills, threads, rate, pad, drain=True)
        out_text, _ = last.communicate(timeout=180)
        if "drained" not in out_text.split():
            notes.append(f"final drain: {out_text.strip() or 'no answer'}")
        committed, memory = _read_log(log)
        # wait until the subscriber has everything it will get (nothing new for 2 s)
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            n = rec.count()
            if n != seen:
                seen, quiet_since = n, time.monotonic()
            time.sleep(0.2)
        records = rec.snapshot()
    figures = check(records, committed, memory)
    res = TortureResult(
        kills=kills,
        broker_flaps=flaps,
        seconds=round(time.monotonic() - t0, 1),
        accepted=len(committed),
        accepted_memory_only=len(memory - committed),
        tmpfs=tmpfs_size,
        notes=notes,
        **figures,
    )
    _print(res, seed, stream)
    return res


def _print(r: TortureResult, seed: int, out: TextIO) -> None:
    where = f"store on a {r.tmpfs} tmpfs" if r.tmpfs else "store on disk"
    lines = [
        f"crash torture (seed {seed}, {where}): {r.kills} SIGKILLs, {r.broker_flaps} broker flaps, "
        f"{r.seconds} s",
        f"  accepted (committed): {r.accepted}; "
        f"accepted in memory only (store failing): {r.accepted_memory_only}",
        f"  delivered: {r.delivered} distinct of {r.received} received; duplicates (same id): {r.duplicates}",
        f"  lost: {r.lost}; lost of the memory-only ones: {r.lost_memory_only}",
        f"  gaps: {r.gaps}; seqs reused with another id: {r.conflicts}; epochs: {r.epochs}; "
        f"messages with two ids: {r.tokens_with_two_ids}",
        f"  {'PASS' if r.passed else 'FAIL'}",
    ]
    out.write("\n".join(lines) + "\n")
    for note in r.notes:
        out.write(f"  note: {note}\n")
    out.flush()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="producer threads (one camera each)")
    ap.add_argument("--rate", type=float, default=200.0, help="messages/s per producer thread")
    ap.add_argument(
        "--flap-every", type=int, default=10, help="flap the broker about every N kills (0: never)"
    )
    ap.add_argument(
        "--tmpfs", default=None, metavar="SIZE", help="put the store on a tmpfs of SIZE (e.g. 192k)"
    )
    ap.add_argument("--json", action="store_true")
    # the producer process (started by the harness)
    ap.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--state", default="", help=argparse.SUPPRESS)
    ap.add_argument("--log", default="", help=argparse.SUPPRESS)
    ap.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--retry-store-s", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--pad", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.producer:
        return producer_main(args)
    res = run_torture(args.kills, args.seed, args.threads, args.rate, args.flap_every, args.tmpfs)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())
