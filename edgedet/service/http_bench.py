"""Cost of the HTTP endpoints: ``edgedet bench --what http`` (``python -m edgedet.service.http_bench``).

Runs the real daemon in this process on the bundled demo clip (MQTT off) and measures:

1. CPU time of one /metrics scrape on the daemon's side: a separate client process scrapes ``--scrapes``
   times back to back; the daemon process's CPU time during that burst, less its CPU rate in quiet
   windows of the same length just before and after (the pipeline keeps running), divided by the
   scrapes. At a 5 s scrape interval that is the endpoint's share of one core (target < 1%).
2. The latency-histogram sink, which runs for every frame whether anyone scrapes or not: time per
   ``observe`` call, and its share of one core at ``--fps`` frames per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgedet.assets import DEMO_CLIP, DEMO_MODEL
from edgedet.config import parse_config
from edgedet.service.daemon import Daemon
from edgedet.types import Detection, DetectionResult

_CLIENT = """
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
size = 0
start = time.monotonic()
for _ in range(n):
    with urllib.request.urlopen(url, timeout=10) as r:
        size = len(r.read())
print(time.monotonic() - start, size)
"""


def _config(state_dir: str, cameras: int) -> str:
    cams = "\n".join(
        f"  - {{name: cam{i}, max_fps: 10, source: {{type: file, path: {DEMO_CLIP}, loop: true}}}}"
        for i in range(cameras)
    )
    return (
        f"model: {{path: {DEMO_MODEL}}}\nbackend: {{type: onnxruntime, threads: 1}}\ncameras:\n{cams}\n"
        f"state_dir: {state_dir}\nmqtt: {{enabled: false}}\ntelemetry: {{type: none}}\n"
        'http: {listen: "127.0.0.1:0"}\n'
    )


def _cpu_during(seconds: float) -> float:
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


def bench_scrape(daemon: Daemon, scrapes: int, rounds: int) -> Dict[str, Any]:
    http = daemon.observability.http
    if http is None:
        raise RuntimeError("the HTTP server did not start")
    url = http.url + "/metrics"
    per_scrape: List[float] = []
    wall: List[float] = []
    size = 0
    for _ in range(rounds):
        client = subprocess.Popen([sys.executable, "-c", _CLIENT, url, "1"], stdout=subprocess.PIPE)
        client.communicate(timeout=60)  # warm: the interpreter's start-up is not part of a burst
        cpu0, t0 = time.process_time(), time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT, url, str(scrapes)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.split()
        burst_cpu, burst_wall = time.process_time() - cpu0, time.monotonic() - t0
        quiet_rate = (_cpu_during(burst_wall / 2) + _cpu_during(burst_wall / 2)) / burst_wall
        per_scrape.append(max(0.0, burst_cpu - quiet_rate * burst_wall) / scrapes)
        wall.append(float(out[0]) / scrapes)
        size = int(out[1])
    cpu = statistics.median(per_scrape)
    return {
        "scrapes_per_round": scrapes,
        "rounds": rounds,
        "cpu_ms_per_scrape": round(cpu * 1000.0, 3),
        "cpu_ms_per_scrape_rounds": [round(v * 1000.0, 3) for v in per_scrape],
        "wall_ms_per_scrape": round(statistics.median(wall) * 1000.0, 3),
        "exposition_bytes": size,
        "cpu_pct_of_one_core_at_5s_scrape": round(cpu / 5.0 * 100.0, 4),
    }


def bench_sink(daemon: Daemon, fps: float) -> Dict[str, Any]:
    result = DetectionResult(
        camera="cam0",
        seq=1,
        capture_time=time.time(),
        capture_monotonic=time.monotonic(),
        source_width=1920,
        source_height=1080,
        detections=tuple(Detection(0, 0, 10, 10, 0.9, 0, "person") for _ in range(5)),
        timings_ms={"preprocess": 2.0, "wait": 1.0, "infer": 20.0, "decode": 1.0},
    )
    observe = daemon.observability.histograms.observe
    n = 20000
    seconds = min(timeit.repeat(lambda: observe(result), number=n, repeat=5)) / n
    return {
        "us_per_frame": round(seconds * 1e6, 2),
        "fps": fps,
        "cpu_pct_of_one_core": round(seconds * fps * 100.0, 4),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edgedet bench --what http", description=__doc__)
    parser.add_argument("--scrapes", type=int, default=300, help="scrapes per burst")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cameras", type=int, default=2, help="cameras in the daemon (more series per scrape)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate for the sink's share of a core")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgedet-http-bench-") as tmp:
        daemon = Daemon(parse_config(_config(tmp, args.cameras), base_dir=Path(tmp)))
        daemon.start()
        stop = threading.Event()
        supervisor = threading.Thread(target=daemon.run, args=(stop,), name="bench-supervisor", daemon=True)
        supervisor.start()
        try:
            time.sleep(3.0)  # frames flowing, histograms and counters filled
            figures = {
                "scrape": bench_scrape(daemon, args.scrapes, args.rounds),
                "sink": bench_sink(daemon, args.fps),
            }
        finally:
            stop.set()
            supervisor.join(5.0)
            daemon.stop()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    s, k = figures["scrape"], figures["sink"]
    print(
        f"HTTP /metrics ({args.cameras} cameras, {s['exposition_bytes']} bytes): "
        f"{s['cpu_ms_per_scrape']:.2f} ms CPU per scrape on the daemon's side "
        f"(rounds: {s['cpu_ms_per_scrape_rounds']}), "
        f"{s['wall_ms_per_scrape']:.2f} ms wall"
    )
    print(
        f"  at a 5 s scrape interval: {s['cpu_pct_of_one_core_at_5s_scrape']:.3f}% of one core (target < 1%)"
    )
    print(
        f"latency-histogram sink: {k['us_per_frame']:.1f} us per frame = "
        f"{k['cpu_pct_of_one_core']:.3f}% of one core at {k['fps']:g} fps (paid with or without scrapes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
