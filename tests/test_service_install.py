"""The unit file passes `systemd-analyze verify`; install-service into a temporary root and dry-run."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from edgedet.service.install import install_service, packaged_unit, render_unit

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edgedet.service"


def _settings(text: str) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def _stub(tmp_path: Path) -> Path:
    exe = tmp_path / "bin" / "edgedet"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


def _verify(unit_text: str, tmp_path: Path, name: str = "edgedet.service") -> Tuple[int, str]:
    """systemd-analyze verify on a copy whose ExecStart program exists (verify checks that it does)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    d = tmp_path / "verify"
    d.mkdir(exist_ok=True)
    unit = d / name
    unit.write_text(render_unit(unit_text, str(_stub(tmp_path))))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout


def _problems(output: str) -> List[str]:
    # verify exits 0 on unknown keys and bad values ("..., ignoring."): those count as failures here
    return [line for line in output.splitlines() if line.strip()]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    rc, out = _verify(UNIT.read_text(), tmp_path)
    assert rc == 0, out
    assert _problems(out) == [], out


def test_verify_check_catches_a_typo(tmp_path: Path) -> None:
    bad = UNIT.read_text().replace("WatchdogSec=30", "WatchdogSecs=30")
    _rc, out = _verify(bad, tmp_path)
    assert _problems(out), "a misspelt key must be reported"


def test_verify_fails_on_missing_program(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "edgedet.service"
    unit.write_text(render_unit(UNIT.read_text(), str(tmp_path / "no-such-edgedet")))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "not executable" in proc.stderr


def test_unit_settings() -> None:
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/usr/local/bin/edgedet run --config %E/edgedet/edgedet.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"] and s["RestartSec"] == ["5"]
    assert s["TimeoutStopSec"] == ["20"]
    # never left failed after a burst of restarts; only configuration errors (exit 78) stop the restarts
    assert s["StartLimitIntervalSec"] == ["0"] and "StartLimitBurst" not in s
    assert s["RestartPreventExitStatus"] == ["78"]
    assert "MALLOC_ARENA_MAX=2" in s["Environment"]  # RSS flat across camera reconnects
    assert s["User"] == ["edgedet"] and s["Group"] == ["edgedet"]
    assert set(s["SupplementaryGroups"][0].split()) == {"video", "render"}
    assert s["StateDirectory"] == ["edgedet"] and s["CacheDirectory"] == ["edgedet"]
    assert s["LoadCredential"] == ["mqtt-password:/etc/edgedet/mqtt-password"]
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert key in s
    assert s["ProtectSystem"] == ["strict"]
    # anything that would close the GPU and camera device nodes
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock", "PrivateUsers"):
        assert key not in s, key
    assert "MemoryDenyWriteExecute" not in s


def test_packaged_unit_is_the_repository_unit() -> None:
    assert packaged_unit().read_bytes() == UNIT.read_bytes()


def test_render_unit_replaces_only_the_program() -> None:
    text = render_unit(UNIT.read_text(), "/opt/edgedet/venv/bin/edgedet")
    assert "ExecStart=/opt/edgedet/venv/bin/edgedet run --config %E/edgedet/edgedet.yaml" in text
    assert 'ExecStart="/opt/my apps/edgedet" run' in render_unit(UNIT.read_text(), "/opt/my apps/edgedet")


def _root(tmp_path: Path, user_exists: bool = False, jtop: bool = False) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/nologin").write_text("")
    groups = ["root:x:0:", "video:x:44:", "ssh:x:101:"]
    if jtop:
        groups.append("jtop:x:998:")
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    if user_exists:
        passwd.append("edgedet:x:997:997::/var/lib/edgedet:/usr/sbin/nologin")
        groups = [g + "edgedet" if g.startswith("video") else g for g in groups]
        groups.append("render:x:105:edgedet")
    (root / "etc/group").write_text("\n".join(groups) + "\n")
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    return root


def test_install_into_temporary_root(tmp_path: Path) -> None:
    root = _root(tmp_path, jtop=True)
    example = tmp_path / "example.yaml"
    example.write_text("model: {path: /var/lib/edgedet/yolox_nano.onnx}\n")
    exe = _stub(tmp_path)
    lines: List[str] = []
    done = install_service(UNIT, root=root, config_src=example, exec_path=str(exe), echo=lines.append)
    assert done == lines
    joined = "\n".join(done)
    assert "group exists: video" in joined
    assert "skipped (root is" in joined and "groupadd --system render" in joined
    assert (
        "useradd --system --no-create-home --home-dir /var/lib/edgedet --shell /usr/sbin/nologin "
        "--user-group --groups video,render edgedet" in joined
    )
    assert "systemctl daemon-reload" in joined

    unit = root / "etc/systemd/system/edgedet.service"
    assert f"ExecStart={exe} run --config %E/edgedet/edgedet.yaml" in unit.read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    config = root / "etc/edgedet/edgedet.yaml"
    assert config.read_text() == example.read_text()
    assert stat.S_IMODE((root / "etc/edgedet").stat().st_mode) == 0o750
    password = root / "etc/edgedet/mqtt-password"
    assert password.read_text() == "" and stat.S_IMODE(password.stat().st_mode) == 0o600
    dropin = root / "etc/systemd/system/edgedet.service.d/groups.conf"
    assert "SupplementaryGroups=jtop" in dropin.read_text()

    # the installed unit (with its real ExecStart) verifies too
    rc, out = _verify(unit.read_text(), tmp_path, "installed.service")
    assert rc == 0 and _problems(out) == [], out

    # a second run keeps the admin's files and changes nothing
    config.write_text("# edited by the admin\n")
    again = "\n".join(
        install_service(UNIT, root=root, config_src=example, exec_path=str(exe), echo=lambda s: None)
    )
    assert "kept existing: /etc/edgedet/edgedet.yaml" in again
    assert "unchanged: /etc/systemd/system/edgedet.service" in again
    assert config.read_text() == "# edited by the admin\n"


def test_existing_user_is_not_recreated(tmp_path: Path) -> None:
    root = _root(tmp_path, user_exists=True)
    done = "\n".join(install_service(UNIT, root=root, exec_path="/usr/bin/true", echo=lambda s: None))
    assert "user exists: edgedet" in done
    assert "useradd" not in done and "usermod" not in done and "groupadd" not in done
    assert "no example config given" in done
    assert not (root / "etc/systemd/system/edgedet.service.d").exists()  # no jtop group here


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = _root(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    example = tmp_path / "example.yaml"
    example.write_text("x: 1\n")
    done = install_service(
        UNIT, root=root, config_src=example, dry_run=True, enable=True, echo=lambda s: None
    )
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    joined = "\n".join(done)
    assert "would write: /etc/systemd/system/edgedet.service" in joined
    assert "would run: useradd" in joined
    assert "would run: systemctl enable --now edgedet.service" in joined


def test_dry_run_on_the_real_root_touches_nothing() -> None:
    # what `edgedet install-service --dry-run` prints on this machine; nothing may be written or run
    ran: List[object] = []
    done = install_service(dry_run=True, echo=lambda s: None, run=ran.append)
    assert ran == []
    assert any(line.startswith("would run: systemctl daemon-reload") for line in done)
    assert not any(line.startswith(("ran:", "created:", "updated:")) for line in done)
