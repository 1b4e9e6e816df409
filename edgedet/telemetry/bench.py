"""Telemetry cost benchmark: ``python -m edgedet.telemetry.bench`` (``edgedet bench --what telemetry``).

1. Parse time per tegrastats line, over every recorded real line many times (target < 100 µs).
2. CPU time of the tegrastats reader thread at a 1 s interval over ``--seconds`` (target < 1% of one
   core), measured with the thread's own CPU clock (pthread_getcpuclockid). It runs the real
   ``tegrastats`` when one is on PATH (a Jetson), else the repository's replaying fake.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import timeit
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgedet.telemetry.reading import reading_from_tegrastats
from edgedet.telemetry.tegrastats import TegrastatsReader, find_tegrastats
from edgedet.telemetry.tegrastats_parse import TegrastatsReading, parse_tegrastats

_REPO = Path(__file__).resolve().parents[2]
_LINE_FILES = (
    _REPO / "tests" / "data" / "tegrastats" / "lines.tsv",
    _REPO.parent / "shared" / "data" / "tegrastats" / "lines.tsv",
)
_FAKE = _REPO / "tests" / "support" / "fake_tegrastats"


def load_lines(path: Path) -> List[str]:
    """The ``line`` column of a recorded-lines TSV (device, jetpack, source, line; # comments)."""
    out = []
    for row in path.read_text(encoding="utf-8").splitlines():
        if row.strip() and not row.startswith("#"):
            cols = row.split("\t")
            out.append(cols[3] if len(cols) >= 4 else row)
    return out


def _to_json(parsed: TegrastatsReading) -> str:
    return json.dumps(reading_from_tegrastats(parsed).to_payload())


def bench_parse(lines: List[str], repeat: int = 2000, rounds: int = 5) -> Dict[str, Any]:
    """Time per call for each line in µs: the best of ``rounds`` rounds of ``repeat // rounds`` calls
    (timeit's rule: the minimum is the cost without other processes' interference), then the mean
    over lines, the slowest line, and the median of all rounds (what a busy machine sees)."""
    per_line_us: List[float] = []
    all_rounds_us: List[float] = []
    convert_us: List[float] = []
    number = max(1, repeat // rounds)
    for line in lines:
        for _ in range(50):  # warm up (and fill the parser's small caches, as a running reader has)
            parse_tegrastats(line)
        times = [
            t / number * 1e6
            for t in timeit.repeat(partial(parse_tegrastats, line), number=number, repeat=rounds)
        ]
        per_line_us.append(min(times))
        all_rounds_us.extend(times)
        parsed = parse_tegrastats(line)
        conv = timeit.repeat(partial(_to_json, parsed), number=number, repeat=rounds)
        convert_us.append(min(conv) / number * 1e6)
    return {
        "lines": len(lines),
        "calls": len(lines) * number * rounds,
        "parse_us_mean": statistics.mean(per_line_us),
        "parse_us_max_line": max(per_line_us),
        "parse_us_min_line": min(per_line_us),
        "parse_us_median_all_rounds": statistics.median(all_rounds_us),
        "reading_and_json_us_mean": statistics.mean(convert_us),
    }


def _thread_cpu_s(ident: Optional[int]) -> float:
    if ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def bench_reader(tegrastats: str, seconds: float = 15.0, interval_s: float = 1.0) -> Dict[str, Any]:
    """Run the reader for ``seconds``; CPU of its thread as a percentage of one core."""
    os.environ.setdefault("FAKE_TEGRASTATS_COUNT", "0")  # the fake replays forever (real ignores it)
    reader = TegrastatsReader(interval_s=interval_s, path=tegrastats)
    reader.start()
    try:
        deadline = time.monotonic() + 10.0 + interval_s
        while reader.lines == 0 and time.monotonic() < deadline:  # first line: process start-up
            time.sleep(0.05)
        thread = reader.thread
        ident = thread.ident if thread is not None else None
        lines0, cpu0, wall0 = reader.lines, _thread_cpu_s(ident), time.monotonic()
        time.sleep(seconds)
        lines1, cpu1, wall1 = reader.lines, _thread_cpu_s(ident), time.monotonic()
    finally:
        reader.stop()
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    return {
        "tegrastats": tegrastats,
        "interval_s": interval_s,
        "seconds": wall,
        "lines": lines1 - lines0,
        "thread_cpu_ms": cpu * 1e3,
        "thread_cpu_pct_of_core": 100.0 * cpu / wall if wall > 0 else None,
        "cpu_ms_per_line": cpu * 1e3 / (lines1 - lines0) if lines1 > lines0 else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgedet.telemetry.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=Path, help="TSV of recorded tegrastats lines (default: the repo's)")
    ap.add_argument("--repeat", type=int, default=2000, help="parse calls per line")
    ap.add_argument("--seconds", type=float, default=15.0, help="reader measurement length (0: skip)")
    ap.add_argument("--interval", type=float, default=1.0, help="tegrastats interval in seconds")
    ap.add_argument("--tegrastats", help="executable (default: tegrastats on PATH, else the repo's fake)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    lines_path = args.lines or next((p for p in _LINE_FILES if p.exists()), None)
    if lines_path is None:
        print("no recorded tegrastats lines found; pass --lines", file=sys.stderr)
        return 2
    result: Dict[str, Any] = {"parse": bench_parse(load_lines(lines_path), args.repeat)}
    if args.seconds > 0:
        exe = args.tegrastats or find_tegrastats("tegrastats") or (str(_FAKE) if _FAKE.exists() else None)
        if exe is None:
            print("no tegrastats and no fake to run; pass --tegrastats", file=sys.stderr)
            return 2
        result["reader"] = bench_reader(exe, args.seconds, args.interval)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    p = result["parse"]
    print(
        f"parse: {p['lines']} real lines x {args.repeat}: mean {p['parse_us_mean']:.1f} us/line "
        f"(fastest line {p['parse_us_min_line']:.1f}, slowest {p['parse_us_max_line']:.1f}; target < 100)"
    )
    print(
        f"parse, median of all rounds (includes interference): {p['parse_us_median_all_rounds']:.1f} us/line"
    )
    print(f"reading + to_payload + json.dumps: {p['reading_and_json_us_mean']:.1f} us/line")
    if "reader" in result:
        r = result["reader"]
        pct = r["thread_cpu_pct_of_core"]
        per_line = r["cpu_ms_per_line"]
        print(
            f"reader thread ({r['tegrastats']}, interval {r['interval_s']:g} s): {r['lines']} lines in "
            f"{r['seconds']:.1f} s, CPU {r['thread_cpu_ms']:.1f} ms = {pct:.3f}% of one core (target < 1%)"
            + (f", {per_line:.3f} ms/line" if per_line is not None else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
