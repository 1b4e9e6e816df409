"""The chaos soak as a benchmark command: `python3 tools/chaos_soak.py [--short] [--workdir DIR]`.

Runs the real daemon for 10 minutes (four cameras: two RTSP streams from real gst-rtsp-server processes, two
files) while RTSP servers are killed and restarted, the broker stops and starts, SIGHUPs alternate valid and
invalid edits and a camera is added and removed; prints RSS growth, fds/threads against their baseline after
every flap, camera return -> first detection, durable messages lost by seq, the longest watchdog ping gap and
whether the daemon ever restarted. See tests/support/chaos.py. Needs mosquitto and python3-gi (as the tests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from anywhere: the soak lives with the test support code
    sys.path.insert(0, str(REPO))

from tests.support.chaos import ChaosSoak, SoakPlan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the 2-minute plan of the test suite")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    plan = replace(SoakPlan.short() if args.short else SoakPlan.full(), seed=args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgedet-soak-"))
    print(f"chaos soak in {workdir} (daemon log: {workdir / 'daemon.log'})", flush=True)
    report = ChaosSoak(workdir, plan, log=lambda line: print(line, flush=True)).run()
    print()
    for line in report.lines():
        print(line)
    return 0 if not report.restarted and report.durable_lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
