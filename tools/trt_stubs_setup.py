#!/usr/bin/env python3
"""Prepare type stubs for TensorRT so mypy can check edgedet/backends/tensorrt without TensorRT.

TensorRT itself cannot be installed off-Jetson, but the ``tensorrt-stubs`` package (10.13 API) can. Its
generated stubs have three defects mypy rejects; this script fixes them in a scratch copy (default
``.stubs/``, git-ignored), never in site-packages (an installed ``tensorrt`` stub folder would make
``import tensorrt`` succeed as an empty namespace package):

1. parameters named ``in`` (a keyword) are renamed ``in_``;
2. a parameter without a default after one with a default gets ``= ...``;
3. ``import tensorrt_libs`` (a runtime-only package) is dropped.

Usage (what CI runs)::

    python tools/trt_stubs_setup.py            # downloads tensorrt-stubs with pip, writes .stubs/
    MYPYPATH=.stubs mypy edgedet/backends/tensorrt

``--wheel PATH`` uses an already downloaded wheel (no network). pyproject.toml's mypy config must keep
``ignore_errors = true`` for the ``tensorrt``/``tensorrt_bindings`` modules (the stubs have further
harmless inconsistencies).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List

STUBS_VERSION = "10.13.0.35.1"
REPO = Path(__file__).resolve().parent.parent
_DEF = re.compile(r"^(\s*def \w+\()(.*)(\)\s*(->.*)?:\s*(#.*)?)$")


def split_params(params: str) -> List[str]:
    """Split a parameter list on top-level commas (not those inside brackets or quotes)."""
    parts, depth, current, quote = [], 0, [], ""
    for ch in params:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def fix_def_line(line: str) -> str:
    match = _DEF.match(line)
    if not match:
        return line
    head, params, tail = match.group(1), match.group(2), match.group(3)
    fixed, seen_default, keyword_only = [], False, False
    for raw in split_params(params):
        param = re.sub(r"^in(\s*:|\s*=|$)", r"in_\1", raw.strip())
        if param.startswith("*") or param == "/":
            keyword_only = keyword_only or param.startswith("*")  # after * no default is needed
            fixed.append(param)
            continue
        annotation_and_default = param.split(":", 1)[-1]
        if "=" in annotation_and_default:
            seen_default = True
        elif seen_default and not keyword_only:
            param += " = ..."
        fixed.append(param)
    return head + ", ".join(fixed) + tail


def patch_text(text: str) -> str:
    out = []
    for line in text.splitlines():
        if re.match(r"^\s*import tensorrt_libs\b", line) or re.match(r"^\s*from tensorrt_libs\b", line):
            continue
        out.append(fix_def_line(line))
    return "\n".join(out) + "\n"


def download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"tensorrt-stubs=={STUBS_VERSION}", "-d", str(dest),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("tensorrt_stubs-*.whl"))
    if not wheels:
        raise SystemExit("pip downloaded no tensorrt_stubs wheel")
    return wheels[-1]


def install(wheel: Path, dest: Path) -> List[Path]:
    written = []
    for folder in ("tensorrt", "tensorrt_bindings"):
        shutil.rmtree(dest / folder, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            top = name.split("/", 1)[0]
            if top not in ("tensorrt", "tensorrt_bindings") or not name.endswith(".pyi"):
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(patch_text(zf.read(name).decode("utf-8")), encoding="utf-8")
            written.append(target)
    if not written:
        raise SystemExit(f"{wheel} holds no tensorrt stubs")
    return written


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".stubs", help="output folder (default .stubs)")
    parser.add_argument("--wheel", type=Path, help="a downloaded tensorrt_stubs wheel (skips pip)")
    args = parser.parse_args(argv)
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    if args.wheel:
        written = install(args.wheel, dest)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            written = install(download_wheel(Path(tmp)), dest)
    print(f"wrote {len(written)} patched stub files under {dest}")
    print(f"now: MYPYPATH={dest} mypy edgedet/backends/tensorrt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
