"""A real RTSP server for the stream tests: gst-rtsp-server driven by Debian's own /usr/bin/python3.

Two faces in one file:

* run as a script by ``/usr/bin/python3`` (the interpreter that can load ``gi``), it serves an H.264 mp4
  at ``rtsp://127.0.0.1:PORT/cam`` until killed. Every client gets its own pipeline that starts at the
  beginning of the clip (not shared), so what a test sees does not depend on when it connected.
  ``--loop`` replays the clip forever (a seek back to the start on end of stream).
* imported by the tests (any interpreter; ``gi`` is never imported then), ``RtspServer`` starts, kills
  and restarts that process on a fixed port, so a test can simulate a camera that drops and comes back.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/cam"


# -- the server (runs under /usr/bin/python3) ------------------------------------------------------------
def _serve(clip: str, port: int, loop: bool) -> None:  # pragma: no cover - runs in the child process
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    location = clip.replace("\\", "\\\\").replace('"', '\\"')
    launch = (
        f'( filesrc location="{location}" ! qtdemux ! h264parse name=parse ! '
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )

    def on_media_configure(_factory: Any, media: Any) -> None:
        if not loop:
            return
        pipeline = media.get_element()
        parse = pipeline.get_by_name("parse")

        def rewind() -> bool:
            pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
            return False

        # the media owns the bus, so catch end of stream on the way: swallow it and seek back to the start
        def on_event(_pad: Any, info: Any) -> Any:
            if info.get_event().type == Gst.EventType.EOS:
                GLib.idle_add(rewind)
                return Gst.PadProbeReturn.DROP
            return Gst.PadProbeReturn.OK

        parse.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    factory.connect("media-configure", on_media_configure)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"rtsp_server: serving {clip} at rtsp://127.0.0.1:{port}{MOUNT}", flush=True)
    GLib.MainLoop().run()


def main(argv: Optional[List[str]] = None) -> None:  # pragma: no cover - runs in the child process
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--loop", action="store_true")
    args = parser.parse_args(argv)
    _serve(args.clip, args.port, args.loop)


# -- the test-side controller ----------------------------------------------------------------------------
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "import sys; sys.exit(0 if Gst.ElementFactory.find('qtdemux') and "
    "Gst.ElementFactory.find('rtph264pay') and Gst.ElementFactory.find('h264parse') else 3)"
)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> Optional[str]:
    """None when Debian's python can run the server, else why not (for pytest.skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing (the RTSP server needs Debian's python3-gi)"
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if proc.returncode == 3:
        return "GStreamer lacks qtdemux/h264parse/rtph264pay (apt: gstreamer1.0-plugins-good/-bad)"
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return (
            f"{SYSTEM_PYTHON} cannot load gi/GstRtspServer ({tail[0]}); "
            "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RtspServer:
    """One gst-rtsp-server child process serving ``clip`` at ``url``; kill/restart keep the port."""

    def __init__(self, clip: Path, workdir: Path, port: Optional[int] = None, loop: bool = True) -> None:
        self.clip = Path(clip)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.loop = loop
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.workdir / f"rtsp_server_{self.port}.log"

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> RtspServer:
        cmd = [
            SYSTEM_PYTHON,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--clip",
            str(self.clip),
        ]
        if self.loop:
            cmd.append("--loop")
        # a clean environment: the test interpreter's PYTHONPATH/PYTHONHOME must not leak into Debian's
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"RTSP server exited at start: {self.log_path.read_text(errors='replace')}"
                )
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"RTSP server did not listen on {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the camera vanishes without a goodbye, as a power cut or a cable pull would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def restart(self, timeout: float = 15.0) -> RtspServer:
        self.kill()
        # the kernel may hold the port briefly; gst-rtsp-server binds with SO_REUSEADDR, retry anyway
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


if __name__ == "__main__":  # pragma: no cover
    main()
