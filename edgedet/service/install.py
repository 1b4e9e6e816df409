"""``edgedet install-service``: the unit, the system user, /etc/edgedet, daemon-reload; says what it did.

Files are written under ``root`` (``/`` for real; a temporary folder in tests). Commands that change the
real system (groupadd, useradd, usermod, chown, systemctl) run only when ``root`` is ``/``; under another
root they are listed as skipped. ``dry_run`` changes nothing and lists everything it would do.
/var/lib/edgedet and /var/cache/edgedet are not created here: the unit's StateDirectory= and
CacheDirectory= make them, owned by the service user, at every start.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set

from edgedet.errors import EdgedetError

UNIT_NAME = "edgedet.service"
DEFAULT_EXEC = "/usr/local/bin/edgedet"
STATE_DIR = "/var/lib/edgedet"
DEVICE_GROUPS = ("video", "render")  # GPU (/dev/nvhost-*, /dev/nvmap, /dev/nvidia*), cameras, /dev/dri
OPTIONAL_GROUPS = ("jtop",)  # /run/jtop.sock, when jetson-stats is installed


class ServiceInstallError(EdgedetError):
    """Installing the systemd service failed (not root, a command failed, a file could not be written)."""


def packaged_unit() -> Path:
    """The unit file shipped inside the package (a copy of the repository's systemd/edgedet.service)."""
    return Path(__file__).resolve().parent / UNIT_NAME


def default_exec_path() -> str:
    """The ``edgedet`` launcher of this installation (a venv's bin/ or /usr/local/bin)."""
    beside = Path(sys.executable).parent / "edgedet"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("edgedet")
    return found or DEFAULT_EXEC


def render_unit(text: str, exec_path: str) -> str:
    """The unit with ExecStart's program replaced by ``exec_path`` (arguments kept)."""
    program = exec_path if " " not in exec_path else '"' + exec_path.replace('"', '\\"') + '"'
    return re.sub(r"(?m)^(ExecStart=)(\S+)", lambda m: m.group(1) + program, text, count=1)


def _names(path: Path) -> Set[str]:
    """First column of /etc/passwd or /etc/group style files (empty when absent)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    return {line.split(":", 1)[0] for line in lines if line and not line.startswith("#")}


def _members(group_file: Path, group: str) -> Set[str]:
    try:
        lines = group_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == group:
            return {m for m in fields[3].split(",") if m}
    return set()


def _run_command(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ServiceInstallError(f"{argv[0]} not found: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()
        raise ServiceInstallError(f"`{shlex.join(argv)}` failed (exit {exc.returncode}): {detail}") from exc


class _Installer:
    def __init__(
        self,
        root: Path,
        dry_run: bool,
        echo: Callable[[str], None],
        run: Callable[[Sequence[str]], None],
    ) -> None:
        self.root = root
        self.dry_run = dry_run
        self.real = root.resolve() == Path("/")
        self.echo = echo
        self.run_fn = run
        self.done: List[str] = []

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def say(self, line: str) -> None:
        self.done.append(line)
        self.echo(line)

    def command(self, argv: Sequence[str]) -> None:
        text = shlex.join(argv)
        if self.dry_run:
            self.say(f"would run: {text}")
        elif not self.real:
            self.say(f"skipped (root is {self.root}, not /): {text}")
        else:
            self.run_fn(argv)
            self.say(f"ran: {text}")

    def write(self, absolute: str, content: str, mode: int, replace: bool) -> bool:
        target = self.path(absolute)
        if target.exists():
            try:
                same = target.read_text(encoding="utf-8") == content
            except (OSError, UnicodeDecodeError):
                same = False
            if same:
                self.say(f"unchanged: {absolute}")
                return False
            if not replace:
                self.say(f"kept existing: {absolute}")
                return False
        verb = "updated" if target.exists() else "created"
        if self.dry_run:
            self.say(f"would write: {absolute} (mode {mode:o})")
            return True
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".edgedet-new")
            tmp.write_text(content, encoding="utf-8")
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            raise ServiceInstallError(f"cannot write {target}: {exc}") from exc
        self.say(f"{verb}: {absolute} (mode {mode:o})")
        return True

    def mkdir(self, absolute: str, mode: int) -> None:
        target = self.path(absolute)
        if target.is_dir():
            self.say(f"exists: {absolute}/")
            return
        if self.dry_run:
            self.say(f"would create: {absolute}/ (mode {mode:o})")
            return
        try:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, mode)
        except OSError as exc:
            raise ServiceInstallError(f"cannot create {target}: {exc}") from exc
        self.say(f"created: {absolute}/ (mode {mode:o})")


def install_service(
    unit_src: Optional[Path] = None,
    root: Path = Path("/"),
    user: str = "edgedet",
    config_src: Optional[Path] = None,
    dry_run: bool = False,
    exec_path: Optional[str] = None,
    enable: bool = False,
    echo: Callable[[str], None] = print,
    run: Callable[[Sequence[str]], None] = _run_command,
) -> List[str]:
    """Install edgedet as a systemd service; returns (and echoes) one line per action.

    ``unit_src``: the unit file (default: the packaged copy). ``config_src``: the example config copied to
    /etc/edgedet/edgedet.yaml when that file does not exist yet (an existing one is never touched).
    ``exec_path``: the edgedet launcher written into ExecStart (default: this installation's).
    ``enable``: also ``systemctl enable --now``.
    """
    inst = _Installer(Path(root), dry_run, echo, run)
    if inst.real and not dry_run and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ServiceInstallError(
            "installing the service needs root: sudo edgedet install-service (or --dry-run)"
        )
    src = unit_src or packaged_unit()
    try:
        unit_text = Path(src).read_text(encoding="utf-8")
    except OSError as exc:
        raise ServiceInstallError(f"cannot read the unit file {src}: {exc}") from exc
    program = exec_path or default_exec_path()
    if inst.real and not Path(program).exists():
        inst.say(f"warning: {program} does not exist; ExecStart will fail until edgedet is installed there")

    # groups and the user: the unit's User=/SupplementaryGroups= must name existing ones
    group_file, passwd_file = inst.path("/etc/group"), inst.path("/etc/passwd")
    groups = _names(group_file)
    for group in DEVICE_GROUPS:
        if group in groups:
            inst.say(f"group exists: {group}")
        else:
            inst.command(["groupadd", "--system", group])
    nologin = next(
        (p for p in ("/usr/sbin/nologin", "/sbin/nologin") if inst.path(p).exists()),
        "/usr/sbin/nologin",
    )
    if user in _names(passwd_file):
        missing = [g for g in DEVICE_GROUPS if user not in _members(group_file, g)]
        inst.say(f"user exists: {user}")
        if missing:
            inst.command(["usermod", "--append", "--groups", ",".join(missing), user])
    else:
        inst.command(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                STATE_DIR,
                "--shell",
                nologin,
                "--user-group",
                "--groups",
                ",".join(DEVICE_GROUPS),
                user,
            ]
        )

    # configuration: readable by the service user, writable by root only
    inst.mkdir("/etc/edgedet", 0o750)
    inst.command(["chown", f"root:{user}", "/etc/edgedet"])
    if config_src is not None and Path(config_src).is_file():
        if inst.write(
            "/etc/edgedet/edgedet.yaml", Path(config_src).read_text(encoding="utf-8"), 0o640, False
        ):
            inst.command(["chown", f"root:{user}", "/etc/edgedet/edgedet.yaml"])
    elif not inst.path("/etc/edgedet/edgedet.yaml").exists():
        inst.say("note: no example config given; write /etc/edgedet/edgedet.yaml before starting")
    # LoadCredential= fails the start when its file is missing: an empty file means "no password"
    inst.write("/etc/edgedet/mqtt-password", "", 0o600, False)

    unit_path = f"/etc/systemd/system/{UNIT_NAME}"
    inst.write(unit_path, render_unit(unit_text, program), 0o644, True)
    dropin = f"/etc/systemd/system/{UNIT_NAME}.d/groups.conf"
    extra = [g for g in OPTIONAL_GROUPS if g in groups]
    if extra:
        # only groups that exist: systemd refuses to start a unit naming an unknown group
        content = (
            "# written by edgedet install-service: optional groups present on this machine\n"
            f"[Service]\nSupplementaryGroups={' '.join(extra)}\n"
        )
        inst.write(dropin, content, 0o644, True)
    inst.command(["systemctl", "daemon-reload"])
    if enable:
        inst.command(["systemctl", "enable", "--now", UNIT_NAME])
    else:
        inst.say(f"next: edit /etc/edgedet/edgedet.yaml, then: systemctl enable --now {UNIT_NAME}")
    return inst.done
