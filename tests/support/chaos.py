"""The chaos soak: the real daemon under a fake systemd, four cameras (two RTSP streams from real
gst-rtsp-server processes, two files), a real mosquitto, and a schedule of trouble:

* each RTSP server is killed (SIGKILL) and restarted at random every 20-40 s; once, one stays down for 2 min;
* the broker is stopped and started;
* SIGHUP every 60 s, alternating an invalid edit (refused, the running config stays) and a valid one (a
  camera added, that camera removed, a camera's frame-rate cap changed and changed back);

and measures what an unattended device needs: RSS growth after the warm-up, open fds and threads against
their baseline after every flap, time from a camera's return to its first detection, durable messages lost
(by seq, per stream), the longest gap between watchdog pings, and whether the daemon ever restarted.

``SoakPlan.full()`` is the 10-minute benchmark (tools/chaos_soak.py); ``SoakPlan.short()`` the 2-minute
version run by tests/test_chaos_soak.py. Figures are printed, never asserted as speed targets.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import yaml

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from tests.support.broker import Mosquitto
from tests.support.fake_systemd import FakeSystemd
from tests.support.rtsp_server import RtspServer

REPO = Path(__file__).resolve().parents[2]
DEVICE = "soak"
RTSP_CAMERAS = ("rtsp1", "rtsp2")
FILE_CAMERAS = ("file1", "file2")
ADDED_CAMERA = "file3"


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float
    warmup_s: float
    flap_every_s: Tuple[float, float]  # an RTSP server is killed this long after it came back
    flap_down_s: Tuple[float, float]  # and stays down this long
    long_down_at_s: float  # the first kill of rtsp2 after this time keeps it down for long_down_s
    long_down_s: float
    broker_down_at_s: Tuple[float, ...]
    broker_down_s: float
    hup_every_s: float
    watchdog_s: float = 10.0
    seed: int = 12

    @classmethod
    def full(cls) -> SoakPlan:
        return cls(
            duration_s=600,
            warmup_s=60,
            flap_every_s=(20, 40),
            flap_down_s=(3, 8),
            long_down_at_s=150,
            long_down_s=120,
            broker_down_at_s=(200, 430),
            broker_down_s=12,
            hup_every_s=60,
        )

    @classmethod
    def short(cls) -> SoakPlan:
        return cls(
            duration_s=120,
            warmup_s=20,
            flap_every_s=(12, 18),
            flap_down_s=(2, 4),
            long_down_at_s=40,
            long_down_s=30,
            broker_down_at_s=(85,),
            broker_down_s=6,
            hup_every_s=15,
        )


@dataclass
class Sample:
    t: float  # seconds since the daemon started
    rss_kb: int
    fds: int
    threads: int


@dataclass
class SoakReport:
    plan: SoakPlan
    pid: int
    exit_code: Optional[int]
    restarted: bool  # the daemon's pid changed or it exited before the end
    ready_count: int  # READY=1 messages: one at start plus one per reload
    rss_after_warmup_kb: int
    rss_end_kb: int
    rss_max_kb: int
    baseline_fds: int
    baseline_threads: int
    # fds/threads minus the baseline of the same camera set, at each nominal moment after a flap
    after_flaps: List[Sample]
    return_to_detection_s: List[float]
    durable_sent_by_stream: Dict[str, int]
    durable_lost_by_stream: Dict[str, int]
    max_ping_gap_s: float
    pings_withheld_lines: int
    events: List[str]
    tracebacks: int
    samples: List[Sample] = field(default_factory=list)

    @property
    def durable_lost(self) -> int:
        return sum(self.durable_lost_by_stream.values())

    def percentile(self, values: List[float], q: float) -> Optional[float]:
        if not values:
            return None
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
        return ordered[index]

    def lines(self) -> List[str]:
        plan = self.plan
        growth_mb = (self.rss_end_kb - self.rss_after_warmup_kb) / 1024.0
        fds = [s.fds for s in self.after_flaps]
        threads = [s.threads for s in self.after_flaps]
        ret = self.return_to_detection_s
        p50, p95 = self.percentile(ret, 50), self.percentile(ret, 95)
        lost = ", ".join(f"{k} {v}" for k, v in sorted(self.durable_lost_by_stream.items()) if v)
        sent = sum(self.durable_sent_by_stream.values())
        rss_after, rss_end = self.rss_after_warmup_kb / 1024, self.rss_end_kb / 1024
        trend = self.rss_trend_mb_per_min()
        trend_text = (
            "-"
            if trend is None
            else f"{trend * plan.duration_s / 60:+.1f} MB per {plan.duration_s / 60:g} min"
        )
        return [
            f"chaos soak: {plan.duration_s / 60:g} min, warm-up {plan.warmup_s:g} s, pid {self.pid}",
            f"RSS after warm-up {rss_after:.1f} MB, at the end {rss_end:.1f} MB: "
            f"growth {growth_mb:+.1f} MB (max {self.rss_max_kb / 1024:.1f} MB); "
            f"least-squares trend after warm-up {trend_text}",
            f"baseline: {self.baseline_fds} fds, {self.baseline_threads} threads; "
            f"after {len(self.after_flaps)} flap checkpoints: fds {_range(fds)}, threads {_range(threads)} "
            "vs baseline",
            f"camera return -> first detection: n={len(ret)} p50 {_fmt(p50)} s p95 {_fmt(p95)} s "
            f"max {_fmt(max(ret) if ret else None)} s",
            f"durable messages: {sent} received over {len(self.durable_sent_by_stream)} streams, "
            f"lost by seq: {self.durable_lost} ({lost or 'none'})",
            f"watchdog: longest gap between pings {self.max_ping_gap_s:.1f} s "
            f"(interval {plan.watchdog_s:g} s), pings withheld {self.pings_withheld_lines} time(s)",
            f"daemon restarted: {'YES' if self.restarted else 'no'} (exit code {self.exit_code} after "
            f"SIGTERM; {self.ready_count} READY=1 = start + reloads); "
            f"tracebacks in the log: {self.tracebacks}",
        ]

    def rss_trend_mb_per_min(self) -> Optional[float]:
        """Slope of RSS over time after the warm-up: the end-point difference alone swings by the size
        of a few freed frame buffers; the trend says whether memory keeps growing."""
        points = [(s.t, s.rss_kb / 1024.0) for s in self.samples if s.t >= self.plan.warmup_s]
        if len(points) < 3:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_r = sum(r for _, r in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var == 0:
            return None
        return 60.0 * sum((t - mean_t) * (r - mean_r) for t, r in points) / var


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _range(values: List[int]) -> str:
    if not values:
        return "(none)"
    return f"{min(values):+d}..{max(values):+d}"


# -- the observer -----------------------------------------------------------------------------------
class SoakSubscriber:
    """A persistent-session QoS 1 subscriber: keeps every message across broker restarts."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt

        self.lock = threading.Lock()
        self.seqs: Dict[str, Set[int]] = {}  # durable stream (topic) -> seqs received
        self.first_after: Dict[str, List[Tuple[float, float]]] = {}  # camera -> (publish ts, capture ts)
        self.stats: List[Dict[str, Any]] = []
        self.durable_topics: Set[str] = set()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="chaos-soak-observer",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *a: c.subscribe(f"edgedet/{DEVICE}/#", qos=1)
        self._client.reconnect_delay_set(0.2, 1.0)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic = str(msg.topic)
        if topic.endswith("/status"):
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            kind = body.get("type")
            if kind == "stats":
                self.stats.append(body)
            elif kind in ("detections", "event"):
                self.seqs.setdefault(topic, set()).add(int(body["seq"]))
                if kind == "detections":
                    entry = (body["publish_ts_ms"] / 1000.0, body["capture_ts_ms"] / 1000.0)
                    self.first_after.setdefault(body["camera"], []).append(entry)

    def latest_stats(self) -> Optional[Dict[str, Any]]:
        with self.lock:
            return self.stats[-1] if self.stats else None

    def first_detection_after(self, camera: str, wall: float) -> Optional[float]:
        with self.lock:
            times = [pub for pub, cap in self.first_after.get(camera, []) if cap >= wall]
        return min(times) if times else None

    def lost_by_stream(self) -> Tuple[Dict[str, int], Dict[str, int]]:
        with self.lock:
            received = {t: len(s) for t, s in self.seqs.items()}
            lost = {t: (max(s) - min(s) + 1) - len(s) for t, s in self.seqs.items() if s}
        return received, lost

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _proc_sample(pid: int, t: float) -> Optional[Sample]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return Sample(t, values.get("VmRSS", 0), fds, values.get("Threads", 0))


# -- the run ------------------------------------------------------------------------------------------
class ChaosSoak:
    def __init__(self, workdir: Path, plan: SoakPlan, log: Callable[[str], None] = print) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.plan = plan
        self.say = log
        self.rng = random.Random(plan.seed)
        self.events: List[str] = []
        self.t0 = 0.0

    # configuration and its edits
    def _config(self, extra_camera: bool = False, file2_fps: float = 4) -> Dict[str, Any]:
        cams: List[Dict[str, Any]] = []
        for name, server in zip(RTSP_CAMERAS, self.servers):
            cams.append(
                {
                    "name": name,
                    "source": {
                        "type": "rtsp",
                        "url": server.url,
                        "decoder": "ffmpeg",
                        "open_timeout_s": 2,
                        "read_timeout_s": 2,
                    },
                    "max_fps": 4,
                    "stall_timeout_s": 3,
                    "reconnect": {"initial_s": 0.5, "max_s": 2},
                }
            )
        for name in FILE_CAMERAS + ((ADDED_CAMERA,) if extra_camera else ()):
            cams.append(
                {
                    "name": name,
                    "source": {"type": "file", "path": str(DEMO_CLIP), "loop": True, "pace": "realtime"},
                    "max_fps": file2_fps if name == "file2" else 4,
                }
            )
        return {
            "device_id": DEVICE,
            "log_level": "info",
            "state_dir": str(self.workdir / "state"),
            "model": {"path": str(DEMO_MODEL)},
            "backend": {"type": "onnxruntime", "threads": 1},
            "cameras": cams,
            "mqtt": {
                "host": self.broker.host,
                "port": self.broker.port,
                "reconnect_min_s": 0.5,
                "reconnect_max_s": 2,
                "messages": {"detections": {"topic": "{camera}/detections", "qos": 1, "durable": True}},
            },
            "telemetry": {"type": "none"},
            "stats": {"interval_s": 2},
            "service": {"heartbeat_timeout_s": 5, "stop_timeout_s": 10},
        }

    def _write(self, data: Dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def _event(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {text}"
        self.events.append(line)
        self.say(line)

    # the schedule
    def _timeline(self) -> List[Tuple[float, str, Any]]:
        plan, rng = self.plan, self.rng
        items: List[Tuple[float, str, Any]] = []
        for index in range(len(RTSP_CAMERAS)):
            t = plan.warmup_s + rng.uniform(*plan.flap_every_s) * (0.5 + 0.5 * index)
            long_done = index == 0  # only rtsp2 gets the long outage
            while t < plan.duration_s - 10:
                down = rng.uniform(*plan.flap_down_s)
                if not long_done and t >= plan.long_down_at_s:
                    down, long_done = plan.long_down_s, True
                items.append((t, "kill", index))
                items.append((min(t + down, plan.duration_s - 5), "start", index))
                t += down + rng.uniform(*plan.flap_every_s)
        for at in plan.broker_down_at_s:
            items.append((at, "broker_stop", None))
            items.append((at + plan.broker_down_s, "broker_start", None))
        edits = ["add", "remove", "fps3", "fps4"]
        t, n = plan.hup_every_s, 0
        while t < plan.duration_s - 5:
            items.append((t, "hup", "invalid" if n % 2 == 0 else edits[(n // 2) % len(edits)]))
            t += plan.hup_every_s
            n += 1
        return sorted(items, key=lambda item: item[0])

    def _act(self, kind: str, arg: Any) -> None:
        if kind == "kill":
            self.servers[arg].kill()
            self.down_since[arg] = time.monotonic()
            self._event(f"RTSP server {RTSP_CAMERAS[arg]} killed")
        elif kind == "start":
            self.servers[arg].restart()
            up = time.time()
            self.pending_returns.append((RTSP_CAMERAS[arg], up))
            self.down_since.pop(arg, None)
            self._event(f"RTSP server {RTSP_CAMERAS[arg]} back")
        elif kind == "broker_stop":
            self.broker.stop()
            self.broker_down = True
            self._event("broker stopped")
        elif kind == "broker_start":
            self.broker.start()
            self.broker_down = False
            self._event("broker started")
        elif kind == "hup":
            if arg == "invalid":
                data = dict(self._config(self.extra_camera, self.file2_fps), camras=[])
            else:
                if arg == "add":
                    self.extra_camera = True
                elif arg == "remove":
                    self.extra_camera = False
                elif arg == "fps3":
                    self.file2_fps = 3
                elif arg == "fps4":
                    self.file2_fps = 4
                data = self._config(self.extra_camera, self.file2_fps)
            self._write(data)
            self.proc.send_signal(signal.SIGHUP)
            self._event(f"SIGHUP with {'an invalid edit' if arg == 'invalid' else 'edit ' + arg}")
        self.flapped = True

    def _expected_cameras(self) -> Set[str]:
        return set(RTSP_CAMERAS + FILE_CAMERAS + ((ADDED_CAMERA,) if self.extra_camera else ()))

    def _nominal(self) -> bool:
        """Everything is up: every server and the broker running, every camera streaming, MQTT connected."""
        if self.down_since or self.broker_down:
            return False
        stats = self.sub.latest_stats()
        if stats is None or time.time() - stats["publish_ts_ms"] / 1000.0 > 3.0:
            return False
        cameras = stats["cameras"]
        if set(cameras) != self._expected_cameras():
            return False
        return all(c["state"] == "streaming" for c in cameras.values()) and bool(stats["mqtt"]["connected"])

    def run(self) -> SoakReport:
        plan = self.plan
        self.broker = Mosquitto(self.workdir / "mosquitto", persistence=True).start()
        self.servers = [RtspServer(DEMO_CLIP, self.workdir / f"rtsp{i + 1}") for i in range(2)]
        for server in self.servers:
            server.start()
        self.sub = SoakSubscriber(self.broker)
        self.extra_camera, self.file2_fps = False, 4.0
        self.down_since: Dict[int, float] = {}
        self.broker_down = False
        self.pending_returns: List[Tuple[str, float]] = []
        self.flapped = False
        self.config_path = self.workdir / "edgedet.yaml"
        self._write(self._config())
        fake = FakeSystemd(self.workdir)
        log_path = self.workdir / "daemon.log"
        log_file = open(log_path, "w")  # noqa: SIM115 - closed below
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("JOURNAL_STREAM", None)
        env["MALLOC_ARENA_MAX"] = "2"  # as the systemd unit sets it
        self.t0 = time.monotonic()
        self.proc = fake.spawn(
            [sys.executable, "-m", "edgedet", "run", "--config", str(self.config_path)],
            watchdog_usec=int(plan.watchdog_s * 1_000_000),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
        )
        pid = self.proc.pid
        samples: List[Sample] = []
        after_flaps: List[Sample] = []
        returns: List[float] = []
        baselines: Dict[FrozenSet[str], Sample] = {}  # fds/threads with everything up, per camera set
        warm: Optional[Sample] = None
        restarted = False
        exit_code: Optional[int] = None
        try:
            fake.wait_for_notification("READY=1", timeout=120)
            self._event("READY=1")
            timeline = self._timeline()
            next_sample = 0.0
            while True:
                now = time.monotonic() - self.t0
                if now >= plan.duration_s:
                    break
                if self.proc.poll() is not None:
                    restarted = True
                    self._event(f"daemon exited with {self.proc.returncode}")
                    break
                while timeline and timeline[0][0] <= now:
                    _, kind, arg = timeline.pop(0)
                    self._act(kind, arg)
                for camera, up in list(self.pending_returns):
                    first = self.sub.first_detection_after(camera, up)
                    if first is not None:
                        returns.append(first - up)
                        self.pending_returns.remove((camera, up))
                        self._event(f"{camera}: first detection {first - up:.2f} s after its return")
                if now >= next_sample:
                    next_sample = now + 2.0
                    sample = _proc_sample(pid, now)
                    if sample is not None:
                        samples.append(sample)
                        nominal = self._nominal()
                        cameras = frozenset(self._expected_cameras())
                        if warm is None and now >= plan.warmup_s and nominal:
                            warm = baselines[cameras] = sample
                            self.flapped = False
                            self._event(
                                f"baseline after warm-up: RSS {sample.rss_kb / 1024:.1f} MB, "
                                f"{sample.fds} fds, {sample.threads} threads"
                            )
                        elif warm is not None and self.flapped and nominal:
                            # a camera added by a reload has its own threads: its own baseline
                            baseline = baselines.setdefault(cameras, sample)
                            fds, threads = sample.fds - baseline.fds, sample.threads - baseline.threads
                            delta = Sample(now, 0, fds, threads)
                            after_flaps.append(delta)
                            self.flapped = False
                            self._event(
                                f"nominal again ({len(cameras)} cameras): {sample.fds} fds ({delta.fds:+d}), "
                                f"{sample.threads} threads ({delta.threads:+d})"
                            )
                time.sleep(0.1)
            end_sample = _proc_sample(pid, time.monotonic() - self.t0)
            if end_sample is not None:
                samples.append(end_sample)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                exit_code = self.proc.wait(30)
            else:
                exit_code = self.proc.returncode
            time.sleep(2.0)  # the last durable messages reach the observer
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.sub.close()
            for server in self.servers:
                server.kill()
            self.broker.stop()
            fake.close()
            log_file.close()
        with open(self.workdir / "samples.csv", "w") as out:  # the RSS/fds/threads series, for a plot
            out.write("t_s,rss_kb,fds,threads\n")
            for sample in samples:
                out.write(f"{sample.t:.1f},{sample.rss_kb},{sample.fds},{sample.threads}\n")
        pings = [m.time for m in fake.messages if m.matches("WATCHDOG=1")]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        text = log_path.read_text(errors="replace")
        received, lost = self.sub.lost_by_stream()
        pids = {m.pid for m in fake.messages}
        end = samples[-1] if samples else Sample(0, 0, 0, 0)
        warm = warm or (samples[0] if samples else end)
        return SoakReport(
            plan=plan,
            pid=pid,
            exit_code=exit_code,
            restarted=restarted or pids != {pid} or exit_code != 0,
            ready_count=sum(1 for m in fake.messages if m.matches("READY=1")),
            rss_after_warmup_kb=warm.rss_kb,
            rss_end_kb=end.rss_kb,
            rss_max_kb=max((s.rss_kb for s in samples), default=0),
            baseline_fds=warm.fds,
            baseline_threads=warm.threads,
            after_flaps=after_flaps,
            return_to_detection_s=returns,
            durable_sent_by_stream=received,
            durable_lost_by_stream=lost,
            max_ping_gap_s=max(gaps) if gaps else float("inf"),
            pings_withheld_lines=text.count("watchdog: withholding pings"),
            events=self.events,
            tracebacks=text.count("Traceback"),
            samples=samples,
        )
