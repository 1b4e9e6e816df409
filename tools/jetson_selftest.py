#!/usr/bin/env python3
"""Jetson self-test: what a Jetson owner runs to validate the TensorRT path that CI cannot run.

    python3 tools/jetson_selftest.py                       # FP16 and INT8 engines of the demo model
    python3 tools/jetson_selftest.py --images DIR --annotations instances.json --calibration DIR
    python3 tools/jetson_selftest.py --qdq-model m_qdq.onnx --fp16-model m_fp16.onnx   # TensorRT 11

It prints the environment (JetPack/L4T, board, TensorRT, CUDA, OpenCV and whether it has GStreamer), then
for each precision: builds the engine from the demo model (edgedet/assets/yolox_nano.onnx; cached in
--state-dir, so a second run is quick; keyed exactly like the daemon's), loads it, measures frames/s of
CUDA preprocessing + pipelined inference on the demo clip while tegrastats reads the module's input
power, times the same engine with trtexec (/usr/src/tensorrt/bin/trtexec --loadEngine, when present),
computes COCO mAP on the evaluation images (default ../shared/data/coco-val2017-mini when present;
reference FP32 mAP 0.313), runs the daemon (`edgedet run`) on the demo clip with that engine, and ends
with the trade this project exists for: per precision mAP, frames/s, the ratio to trtexec (the goal on a
Jetson is >= 0.9x) and mJ per frame, as a table and a PNG (--plot; mAP against frames/s, marker size =
energy per frame). ``--json FILE`` also writes the results as JSON.
Exit status: 0 when every step that could run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ASSETS = REPO / "edgedet" / "assets"
DEMO_MODEL = ASSETS / "yolox_nano.onnx"
DEMO_CLIP = ASSETS / "demo_street.mp4"
SHARED = REPO.parent / "shared"

# L4T major.minor -> JetPack (shared/docs/jetson-reference.md section 1)
_JETPACK = [
    ((35, 2), (35, 6), "5.1.x"),
    ((36, 3), (36, 3), "6.0"),
    ((36, 4), (36, 4), "6.1 / 6.2"),
    ((38, 0), (39, 99), "7.x"),
]


def parse_tegra_release(text: str) -> Optional[Tuple[int, int, int]]:
    """L4T version from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ...") as (36, 4, 3)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def jetpack_for(l4t: Tuple[int, int, int]) -> str:
    for low, high, name in _JETPACK:
        if low <= l4t[:2] <= high:
            return name
    return "unknown (not in the table of shared/docs/jetson-reference.md)"


def opencv_gstreamer(build_info: str) -> Optional[bool]:
    """Whether cv2.getBuildInformation() reports GStreamer support (None when the line is absent)."""
    m = re.search(r"^\s*GStreamer:\s*(\S+)", build_info, re.M)
    if not m:
        return None
    return m.group(1).upper().startswith("YES")


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        text = Path("/etc/nv_tegra_release").read_text()
        l4t = parse_tegra_release(text)
        env["l4t"] = ".".join(map(str, l4t)) if l4t else text.strip()[:80]
        env["jetpack"] = jetpack_for(l4t) if l4t else "unknown"
    except OSError:
        env["l4t"] = env["jetpack"] = "not a Jetson (/etc/nv_tegra_release missing)"
    try:
        env["board"] = Path("/proc/device-tree/model").read_bytes().replace(b"\x00", b"").decode().strip()
    except OSError:
        env["board"] = "-"
    try:
        import tensorrt

        env["tensorrt"] = str(getattr(tensorrt, "__version__", "?"))
    except ImportError as exc:
        env["tensorrt"] = f"MISSING ({exc}); JetPack: sudo apt install python3-libnvinfer"
    try:
        import pycuda
        import pycuda.driver as cuda

        cuda.init()
        env["pycuda"] = pycuda.VERSION_TEXT
        env["cuda_driver"] = _cuda_version(cuda.get_driver_version())
        env["cuda_toolkit_of_pycuda"] = ".".join(map(str, cuda.get_version()))
        env["gpu"] = f"{cuda.Device(0).name()} sm_{''.join(map(str, cuda.Device(0).compute_capability()))}"
    except Exception as exc:
        env["pycuda"] = f"MISSING or broken ({exc}); pip install 'edgedet[jetson]' (builds with nvcc)"
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20)
        env["nvcc"] = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "not on PATH"
    except (OSError, subprocess.TimeoutExpired):
        from edgedet.cudart.pycuda_impl import find_nvcc

        env["nvcc"] = find_nvcc() or "not found (CUDA preprocessing needs it)"
    try:
        import cv2

        env["opencv"] = cv2.__version__
        env["opencv_path"] = str(Path(cv2.__file__).parent)
        gst = opencv_gstreamer(cv2.getBuildInformation())
        env["opencv_gstreamer"] = {True: "YES", False: "NO", None: "unknown"}[gst]
        if "site-packages" in env["opencv_path"] and env["machine"] == "aarch64":
            env["opencv_warning"] = (
                "cv2 comes from pip (no GStreamer; it shadows JetPack's OpenCV): pip uninstall "
                "opencv-python opencv-python-headless"
            )
    except ImportError:
        env["opencv"] = "MISSING (JetPack: sudo apt install python3-opencv)"
    return env


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{(code % 1000) // 10}"


def model_spec(model: Path) -> Any:
    """The model's preprocessing, resolved exactly as the daemon resolves it (so the engine key is the
    daemon's): input name, size and dtype from the ONNX, conventions of its family."""
    from edgedet.models.config import ModelConfig
    from edgedet.models.postprocess import resolve_input_spec

    return resolve_input_spec(ModelConfig(path=str(model)), Path(model))


TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"


def find_trtexec() -> Optional[str]:
    """JetPack's trtexec (not on PATH there), else one on PATH."""
    if os.access(TRTEXEC_DEFAULT, os.X_OK):
        return TRTEXEC_DEFAULT
    return shutil.which("trtexec")


def parse_trtexec_throughput(text: str) -> Optional[float]:
    """Queries/s from trtexec's performance summary ("[I] Throughput: 93.4 qps")."""
    m = re.search(r"Throughput:\s*([0-9.]+)\s*qps", text)
    return float(m.group(1)) if m else None


def run_trtexec(engine: Path, batch: int = 1, seconds: float = 10.0) -> Dict[str, Any]:
    """trtexec --loadEngine on ``engine``: its frames/s (qps x batch), or why there is none."""
    exe = find_trtexec()
    if exe is None:
        return {"error": f"trtexec not found ({TRTEXEC_DEFAULT} or PATH)"}
    cmd = [exe, f"--loadEngine={engine}", f"--duration={max(1, int(seconds))}", "--useSpinWait"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"trtexec failed: {exc}"}
    qps = parse_trtexec_throughput(proc.stdout)
    if proc.returncode != 0 or qps is None:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"error": f"trtexec exit {proc.returncode}: {' | '.join(tail)}"}
    return {"fps": qps * batch, "command": " ".join(cmd)}


class PowerSampler:
    """Module input power from tegrastats while a measurement runs (a mean over its readings)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.samples: List[float] = []
        self.error: Optional[str] = None
        self._interval = interval_s
        self._reader: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="selftest-power", daemon=True)

    def __enter__(self) -> PowerSampler:
        from edgedet.errors import EdgedetError
        from edgedet.telemetry.tegrastats import TegrastatsReader, find_tegrastats

        if find_tegrastats() is None:
            self.error = "tegrastats not found"
            return self
        self._reader = TegrastatsReader(interval_s=self._interval)
        try:
            self._reader.start()
        except EdgedetError as exc:
            self.error = str(exc)
            self._reader = None
            return self
        self._thread.start()
        return self

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(self._interval / 2):
            reading = self._reader.latest()
            if reading is not None and reading is not seen and reading.total_power_mw is not None:
                self.samples.append(float(reading.total_power_mw))
                seen = reading

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10 * self._interval  # a short run still gets one reading
        while not self.samples and self._reader is not None and time.monotonic() < deadline:
            time.sleep(self._interval / 4)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if self._reader is not None:
            self._reader.stop()

    @property
    def mean_mw(self) -> Optional[float]:
        return sum(self.samples) / len(self.samples) if self.samples else None


def measure_fps(
    backend: Any, frames: List[Any], use_cuda: bool, spec: Any, repeat: int = 2
) -> Dict[str, float]:
    """Frames/s of preprocessing + pipelined inference (all slots in flight) over the demo frames."""
    import numpy as np

    if use_cuda:
        from edgedet.preprocess.cuda import CudaPreprocessor

        pre: Any = CudaPreprocessor(spec, runtime=backend.runtime, timing=True)
    else:
        from edgedet.preprocess.cpu import CpuPreprocessor

        pre = CpuPreprocessor(spec)
    buffers = [pre.allocate() for _ in range(backend.slots + 1)]
    infer_ms: List[float] = []
    pending: List[Any] = []
    count = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for frame in frames:
            buf = buffers[count % len(buffers)]
            pre.run(frame, buf)
            pending.append(backend.submit({spec.name: buf}, wait=None))
            count += 1
            if len(pending) == backend.slots:
                backend.collect(pending.pop(0))
                infer_ms.append(backend.last_timings["infer_ms"])
    for handle in pending:
        backend.collect(handle)
    elapsed = time.perf_counter() - start
    pre.close()
    return {
        "fps": count / elapsed,
        "gpu_infer_ms_median": float(np.median(infer_ms)) if infer_ms else float("nan"),
        "frames": float(count),
    }


def run_daemon(model: Path, cfg: Dict[str, Any], state_dir: Path, seconds: float) -> Dict[str, Any]:
    """`edgedet run` on the demo clip with this backend config for ``seconds``; exit code and fps lines."""
    import yaml

    config = {
        "version": 1,
        "state_dir": str(state_dir),
        "log_level": "info",
        "model": {"path": str(model)},
        "backend": cfg,
        "cameras": [{"name": "demo", "source": {"type": "file", "path": str(DEMO_CLIP), "pace": "fast"}}],
        "stats": {"interval_s": max(1.0, seconds / 4)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "selftest.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "edgedet", "run", "--config", str(path), "--duration", str(seconds)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=seconds + 600)
    lines = (proc.stdout + proc.stderr).splitlines()
    stats = [ln for ln in lines if re.search(r"fps|frames/s|frames_per_s", ln, re.I)]
    return {
        "exit_code": proc.returncode,
        "seconds": time.monotonic() - started,
        "stats_lines": stats[-3:],
        "tail": lines[-8:] if proc.returncode != 0 else [],
    }


def run_precision(args: argparse.Namespace, precision: str, env: Dict[str, Any]) -> Dict[str, Any]:
    from edgedet.backends.config import TensorRTBackend
    from edgedet.backends.tensorrt import build_engine, open_tensorrt_backend

    result: Dict[str, Any] = {"precision": precision}
    cfg_dict: Dict[str, Any] = {"type": "tensorrt", "precision": precision, "slots": 2}
    major = int(str(env["tensorrt"]).split(".")[0])  # main() stops first when TensorRT is missing
    if precision in ("int8", "best"):
        if args.qdq_model:
            cfg_dict["qdq_model"] = str(args.qdq_model)
        elif major >= 11:
            result["skipped"] = "TensorRT 11 has no INT8 calibration: pass --qdq-model (edgedet quantize)"
            return result
        else:
            cfg_dict["calibration"] = str(args.calibration)
            cfg_dict["calibration_images"] = args.calibration_images
    if precision in ("fp16", "best") and major >= 11:
        if not args.fp16_model:
            result["skipped"] = (
                "TensorRT 11 builds FP16 from an FP16 ONNX: pass --fp16-model (edgedet quantize --fp16)"
            )
            return result
        cfg_dict["fp16_model"] = str(args.fp16_model)
    cfg = TensorRTBackend(**cfg_dict)
    spec = model_spec(args.model)
    started = time.monotonic()
    path = build_engine(args.model, cfg, args.state_dir, input_spec=spec, force=args.rebuild, progress=print)
    result["build_s"] = time.monotonic() - started
    result["engine"] = str(path)
    backend = open_tensorrt_backend(cfg, args.model, args.state_dir, input_spec=spec)
    try:
        result["backend_precision"] = backend.precision
        frames = _demo_frames()[: args.frames]
        use_cuda = "MISSING" not in str(env.get("pycuda", "MISSING"))
        with PowerSampler() as power:
            result["pipeline"] = measure_fps(backend, frames, use_cuda, spec)
        result["pipeline"]["preprocess"] = "cuda" if use_cuda else "cpu"
        result["power_mw"] = power.mean_mw
        result["power_note"] = power.error
        if power.mean_mw is not None:
            result["mj_per_frame"] = power.mean_mw / result["pipeline"]["fps"]
        if args.images and args.annotations:
            from edgedet.precision.evaluate import evaluate

            ev = evaluate(args.model, args.images, args.annotations, backend=backend, limit=args.limit)
            result["map50_95"] = ev.map50_95
            result["map50"] = ev.map50
            result["eval_median_infer_ms"] = ev.median_infer_ms
    finally:
        backend.close()
    result["trtexec"] = run_trtexec(path, batch=1)
    if "fps" in result["trtexec"]:
        result["ratio_to_trtexec"] = result["pipeline"]["fps"] / result["trtexec"]["fps"]
    if not args.skip_daemon:
        result["daemon"] = run_daemon(args.model, cfg_dict, args.state_dir, args.seconds)
    return result


def _demo_frames() -> List[Any]:
    import cv2

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise RuntimeError(f"cannot decode {DEMO_CLIP}")
    return frames


def main(argv: Optional[List[str]] = None) -> int:
    default_images = SHARED / "data" / "coco-val2017-mini"
    default_calib = SHARED / "data" / "coco-val2017-calib"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--precisions", default="fp16,int8", help="comma-separated: fp32,fp16,int8,best")
    parser.add_argument("--state-dir", type=Path, default=Path.home() / ".cache" / "edgedet-selftest")
    parser.add_argument(
        "--images", type=Path, default=(default_images / "images") if default_images.is_dir() else None
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        default=(default_images / "instances_val2017_mini.json") if default_images.is_dir() else None,
    )
    parser.add_argument(
        "--calibration", type=Path, default=default_calib if default_calib.is_dir() else DEMO_CLIP
    )
    parser.add_argument("--calibration-images", type=int, default=80)
    parser.add_argument("--qdq-model", type=Path, help="a Q/DQ INT8 ONNX (needed on TensorRT 11)")
    parser.add_argument("--fp16-model", type=Path, help="an FP16 ONNX (needed on TensorRT 11)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the daemon runs per precision")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="rebuild engines even when cached")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plot", type=Path, help="write the trade (mAP against frames/s, energy) as a PNG")
    parser.add_argument("--frames", type=int, default=None, help="time on the first N demo frames only")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = environment()
    print("== environment")
    for k, v in env.items():
        print(f"  {k:<24} {v}")
    if str(env["tensorrt"]).startswith("MISSING"):
        print(f"== TensorRT is needed for every step: {env['tensorrt']}")
        return 1
    results: List[Dict[str, Any]] = []
    ok = True
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        print(f"== {precision}")
        try:
            results.append(run_precision(args, precision, env))
        except Exception as exc:
            ok = False
            traceback.print_exc()
            results.append({"precision": precision, "error": f"{type(exc).__name__}: {exc}"})
    print("== summary")
    for line in summary_table(results):
        print(line)
    for r in results:
        daemon = r.get("daemon", {})
        if daemon and daemon["exit_code"] != 0:
            ok = False
    if not args.images:
        print(
            "  (no evaluation images: pass --images and --annotations for mAP; reference FP32 mAP is 0.313)"
        )
    if args.plot:
        print(f"  {plot_trade(results, args.plot)}")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2, default=str))
    return 0 if ok else 1


def _fmt(value: Optional[float], spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def summary_table(results: List[Dict[str, Any]]) -> List[str]:
    """The trade per precision: mAP, frames/s, the ratio to trtexec, energy per frame (one line each)."""
    lines = [
        f"  {'precision':<10}{'build s':>8}{'mAP50-95':>9}{'frames/s':>9}{'trtexec':>9}{'ratio':>7}"
        f"{'mJ/frame':>9}{'GPU ms':>8}  daemon"
    ]
    for r in results:
        if "skipped" in r or "error" in r:
            lines.append(f"  {r['precision']:<10}  {r.get('skipped') or 'ERROR ' + r['error']}")
            continue
        daemon = r.get("daemon", {})
        pipe = r["pipeline"]
        lines.append(
            f"  {r['precision']:<10}{_fmt(r.get('build_s'), '8.0f')}{_fmt(r.get('map50_95'), '9.3f')}"
            f"{_fmt(pipe['fps'], '9.1f')}{_fmt(r.get('trtexec', {}).get('fps'), '9.1f')}"
            f"{_fmt(r.get('ratio_to_trtexec'), '7.2f')}{_fmt(r.get('mj_per_frame'), '9.1f')}"
            f"{_fmt(pipe['gpu_infer_ms_median'], '8.2f')}  "
            + ("skipped" if not daemon else f"exit {daemon['exit_code']}")
        )
        for note in (r.get("trtexec", {}).get("error"), r.get("power_note")):
            if note:
                lines.append(f"      {note}")
        for line in daemon.get("stats_lines", []) + daemon.get("tail", []):
            lines.append(f"      daemon: {line}")
    return lines


def plot_trade(results: List[Dict[str, Any]], path: Path) -> str:
    """mAP against frames/s per precision, marker area proportional to mJ per frame; a line saying what
    was written (or why nothing was)."""
    points = [r for r in results if "pipeline" in r and r.get("map50_95") is not None]
    if not points:
        return f"no plot: no precision has both mAP and frames/s ({path} not written)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    energies = [r.get("mj_per_frame") for r in points]
    known = [e for e in energies if e is not None]
    scale = 600.0 / max(known) if known else 0.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for r, energy in zip(points, energies):
        size = energy * scale if energy is not None else 60.0
        ax.scatter(r["pipeline"]["fps"], r["map50_95"], s=size, alpha=0.6)
        label = r["precision"] + (f" ({energy:.0f} mJ/frame)" if energy is not None else "")
        ax.annotate(label, (r["pipeline"]["fps"], r["map50_95"]), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("frames/s (edgedet, end to end)")
    ax.set_ylabel("mAP50-95")
    ax.set_title("precision trade: accuracy, speed, energy (marker size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return f"plot written: {path}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
