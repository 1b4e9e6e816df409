"""Outbox benchmark: durable messages through SQLite (WAL, fsync on every group commit) to a real
broker. Prints sustained messages/s, enqueue-to-PUBACK latency p50/p95, the outbox's cost to an
inference loop, and peak RSS.

put() returns only after the group commit that holds its message, so one calling thread gets at most
one message per fsync; ``--producers`` threads (cameras, say) share each fsync. The figures are for
that many concurrent callers.

    python -m edgedet.devtools.outbox_bench                           # a temporary local mosquitto
    python -m edgedet.devtools.outbox_bench --host 127.0.0.1 --port 1883   # an existing broker
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

from edgedet.devtools.broker import Broker
from edgedet.publish.config import MqttConfig
from edgedet.publish.messages import ModelInfo, percentiles
from edgedet.publish.mqtt import MqttPublisher
from edgedet.tracking.values import PresenceEvent
from edgedet.types import Detection, DetectionResult

TARGET_RATE = 2000.0
TARGET_P95_MS = 50.0
TARGET_OVERHEAD = 0.05


@dataclass
class OutboxBenchResult:
    messages: int
    seconds: float
    msgs_per_s: float
    paced_rate: float
    paced_achieved: float
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    latency_max_ms: Optional[float]
    pipeline_fps_plain: Optional[float]
    pipeline_fps_outbox: Optional[float]
    pipeline_fps_no_outbox: Optional[float]
    outbox_overhead: Optional[float]
    enqueue_us_mean: float
    peak_rss_mb: float
    dropped: int
    synchronous: str
    producers: int
    commits: int  # group commits (fsyncs) during the sustained run

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


# mosquitto's default Receive Maximum (max_inflight_messages 20) caps one client at 20 unacknowledged
# QoS 1 messages, about 2,000 durable msgs/s here; the outbox is configured for 100 (outbox.max_inflight)
BROKER_INFLIGHT = 100


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def _event(i: int, pad: str, camera: int = 0) -> PresenceEvent:
    t = time.time()
    return PresenceEvent(f"bench{camera}", "appeared", 0, "person" + pad, t, i, 1, 0.9, t, t)


def _publisher(host: str, port: int, state: Path, synchronous: str, durable: bool = True) -> MqttPublisher:
    cfg = MqttConfig.model_validate(
        {
            "host": host,
            "port": port,
            "client_id": f"edgedet-bench-{int(time.time() * 1000) % 100000}",
            "clean_start": True,
            "messages": {"events": {"topic": "{camera}/events", "qos": 1, "durable": durable}},
            "outbox": {"synchronous": synchronous, "max_messages": 1_000_000, "max_bytes": 1 << 30},
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        }
    )
    pub = MqttPublisher(cfg, "bench", state)
    pub.start()
    deadline = time.monotonic() + 10
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    if not pub.connected:
        pub.stop(1.0)
        raise RuntimeError(f"cannot connect to the broker at {host}:{port}: {pub.status().last_error}")
    return pub


def _wait_acked(pub: MqttPublisher, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pub.outbox.stats().depth == 0:
            return True
        time.sleep(0.002)
    return False


def _threads(producers: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(k,), name=f"bench-producer-{k}") for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _burst(pub: MqttPublisher, n: int, pad: str, producers: int) -> Tuple[float, float]:
    """n durable messages as fast as ``producers`` threads get them accepted; returns (seconds to the
    last ack, mean put() time in us, which includes waiting for the group commit)."""
    put_s = [0.0] * producers

    def work(k: int) -> None:
        for i in range(k, n, producers):
            a = time.perf_counter()
            pub.publish_event(_event(i, pad, k))
            put_s[k] += time.perf_counter() - a

    t0 = time.perf_counter()
    _threads(producers, work)
    if not _wait_acked(pub, 120):
        raise RuntimeError("durable messages were not all acknowledged within 120 s")
    return time.perf_counter() - t0, sum(put_s) / max(n, 1) * 1e6


def _paced(
    pub: MqttPublisher, rate: float, seconds: float, pad: str, producers: int
) -> Tuple[List[float], float]:
    pub.outbox.latencies_ms.clear()
    n = int(rate * seconds)
    t0 = time.perf_counter()

    def work(k: int) -> None:
        for i in range(k, n, producers):  # message i is due at i / rate, whoever sends it
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pub.publish_event(_event(i, pad, k))

    _threads(producers, work)
    _wait_acked(pub, 60)
    elapsed = time.perf_counter() - t0
    return list(pub.outbox.latencies_ms), n / elapsed


def _inference_loop() -> Optional[Callable[[], None]]:
    """One YOLOX-Nano inference on the demo model (the pipeline's main cost), or None."""
    model = Path(__file__).resolve().parent.parent / "assets" / "yolox_nano.onnx"
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    if not model.exists():
        return None
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 416, 416)).astype(np.float32)

    def run() -> None:
        sess.run(None, {inp.name: x})

    return run


def _pipeline_fps(infer: Callable[[], None], pub: Optional[MqttPublisher], seconds: float) -> float:
    """Frames/s of an inference loop that publishes each frame's detections and a durable event."""

    model = ModelInfo("yolox_nano", "yolox", "fp32", "onnxruntime", 416, 416)
    dets = tuple(Detection(10.0 * i, 20.0, 10.0 * i + 50, 200.0, 0.8, 0, "person") for i in range(10))
    frames = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        infer()
        frames += 1
        if pub is not None:
            r = DetectionResult(
                "cam1", frames, time.time(), time.monotonic(), 1920, 1080, dets, {"inference": 1.0}
            )
            pub.publish_detections(r, model)
            pub.publish_event(_event(frames, ""))  # far more events than presence produces
    return frames / (time.perf_counter() - t0)


def _overhead_rounds(
    infer: Callable[[], None],
    host: str,
    port: int,
    state: Path,
    synchronous: str,
    seconds: float,
    rounds: int = 3,
) -> Tuple[float, float, float]:
    """Median fps of: inference alone, publishing without outbox, publishing through the outbox;
    interleaved in rounds so that other load on the machine hits all three alike."""
    direct = _publisher(host, port, state / "direct", synchronous, durable=False)
    durable = _publisher(host, port, state / "durable", synchronous, durable=True)
    runs: Dict[str, List[float]] = {"plain": [], "direct": [], "durable": []}
    try:
        infer()  # warm-up
        for _ in range(rounds):
            for name, pub in (("plain", None), ("direct", direct), ("durable", durable)):
                runs[name].append(_pipeline_fps(infer, pub, seconds / rounds))
    finally:
        direct.stop(5.0)
        durable.stop(5.0)

    def median(v: List[float]) -> float:
        return sorted(v)[len(v) // 2]

    return median(runs["plain"]), median(runs["direct"]), median(runs["durable"])


def run_outbox_bench(
    host: str = "127.0.0.1",
    port: int = 1883,
    n: int = 20_000,
    rate: float = TARGET_RATE,
    paced_seconds: float = 5.0,
    payload_pad: int = 100,
    pipeline_seconds: float = 6.0,
    state_dir: Optional[Path] = None,
    synchronous: str = "full",
    producers: int = 8,
    out: Optional[TextIO] = None,
) -> OutboxBenchResult:
    """Needs a broker at host:port. ``pipeline_seconds`` 0 skips the inference-loop overhead part."""
    stream = out if out is not None else sys.stdout
    pad = "x" * payload_pad
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgedet-bench-")))
        pub = _publisher(host, port, state_dir / "a", synchronous)
        try:
            _burst(pub, min(500, n), pad, producers)  # warm-up: file creation, first pages
            commits0 = pub.outbox.stats().commits
            seconds, put_us = _burst(pub, n, pad, producers)
            commits = pub.outbox.stats().commits - commits0
            lat, achieved = _paced(pub, rate, paced_seconds, pad, producers)
            dropped = pub.status().outbox_dropped
        finally:
            pub.stop(5.0)
        pct = percentiles(lat)
        fps_plain = fps_outbox = fps_direct = overhead = None
        infer = _inference_loop() if pipeline_seconds > 0 else None
        if infer is not None:
            fps_plain, fps_direct, fps_outbox = _overhead_rounds(
                infer, host, port, state_dir, synchronous, pipeline_seconds
            )
            overhead = max(0.0, 1.0 - fps_outbox / fps_direct)
    res = OutboxBenchResult(
        messages=n,
        seconds=round(seconds, 3),
        msgs_per_s=round(n / seconds, 1),
        paced_rate=rate,
        paced_achieved=round(achieved, 1),
        latency_p50_ms=pct["p50"],
        latency_p95_ms=pct["p95"],
        latency_max_ms=round(max(lat), 3) if lat else None,
        pipeline_fps_plain=None if fps_plain is None else round(fps_plain, 2),
        pipeline_fps_outbox=None if fps_outbox is None else round(fps_outbox, 2),
        pipeline_fps_no_outbox=None if fps_direct is None else round(fps_direct, 2),
        outbox_overhead=None if overhead is None else round(overhead, 4),
        enqueue_us_mean=round(put_us, 1),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        dropped=dropped,
        synchronous=synchronous,
        producers=producers,
        commits=commits,
    )
    _print(res, stream)
    return res


def _print(r: OutboxBenchResult, out: TextIO) -> None:
    def mark(ok: bool) -> str:
        return "ok" if ok else "BELOW TARGET"

    out.write(
        f"durable outbox -> MQTT QoS 1 (SQLite WAL, synchronous={r.synchronous}, fsync per group commit)\n"
    )
    out.write(
        f"  sustained: {r.messages} messages in {r.seconds:.2f} s = {r.msgs_per_s:.0f} msgs/s "
        f"[target >= {TARGET_RATE:.0f}: {mark(r.msgs_per_s >= TARGET_RATE)}]\n"
    )
    out.write(
        f"  paced at {r.paced_rate:.0f}/s (achieved {r.paced_achieved:.0f}/s): enqueue->PUBACK p50 "
        f"{r.latency_p50_ms} ms, p95 {r.latency_p95_ms} ms, max {r.latency_max_ms} ms "
        f"[target p95 <= {TARGET_P95_MS:.0f} ms: {mark((r.latency_p95_ms or 1e9) <= TARGET_P95_MS)}]\n"
    )
    out.write(
        f"  {r.producers} producer thread(s); {r.commits} group commits for {r.messages} messages "
        f"({r.messages / max(r.commits, 1):.1f} per fsync); put() {r.enqueue_us_mean:.1f} us per message on "
        "the calling thread (returns after its commit)\n"
    )
    if r.outbox_overhead is not None:
        out.write(
            "  inference loop (YOLOX-Nano, 1 frame = detections + 1 durable event): "
            f"{r.pipeline_fps_plain} fps alone, {r.pipeline_fps_no_outbox} fps publishing without outbox, "
            f"{r.pipeline_fps_outbox} fps with outbox -> outbox overhead {r.outbox_overhead * 100:.1f}% "
            f"[target < {TARGET_OVERHEAD * 100:.0f}%: {mark(r.outbox_overhead < TARGET_OVERHEAD)}]\n"
        )
    out.write(f"  dropped: {r.dropped}; peak RSS {r.peak_rss_mb:.0f} MB\n")
    out.flush()


@contextlib.contextmanager
def temporary_broker() -> Iterator[int]:
    """A throw-away mosquitto on a free loopback port (for `--start-broker`)."""
    with tempfile.TemporaryDirectory(prefix="edgedet-bench-broker-") as d:
        broker = Broker(Path(d), max_inflight=BROKER_INFLIGHT).start()
        try:
            yield broker.port
        finally:
            broker.stop()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--port", type=int, default=None, help="an existing broker (default: start a temporary one)"
    )
    ap.add_argument(
        "--start-broker", action="store_true", help="run a temporary local mosquitto (the default)"
    )
    ap.add_argument("-n", type=int, default=20_000, help="messages in the sustained run")
    ap.add_argument("--rate", type=float, default=TARGET_RATE, help="messages/s in the latency run")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    ap.add_argument("--pipeline-seconds", type=float, default=6.0, help="0 skips the inference-loop part")
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full")
    ap.add_argument("--producers", type=int, default=8, help="threads calling put() at once")
    args = ap.parse_args(argv)
    kw: Dict[str, Any] = {
        "n": args.n,
        "rate": args.rate,
        "paced_seconds": args.seconds,
        "pipeline_seconds": args.pipeline_seconds,
        "synchronous": args.synchronous,
        "producers": args.producers,
    }
    if args.start_broker or args.port is None:
        with temporary_broker() as port:
            run_outbox_bench("127.0.0.1", port, **kw)
    else:
        run_outbox_bench(args.host, args.port, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
