"""Logging chooses the journal only when stderr really is systemd's journal stream."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from edgedet.service.logging_setup import (
    HANDLER_NAMES,
    configure_logging,
    journal_stream_matches,
    parse_level,
    set_level,
    syslog_priority,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h.name in HANDLER_NAMES:
            root.removeHandler(h)
    root.handlers[:] = handlers
    root.setLevel(level)


def _journal_env(f: Any) -> Dict[str, str]:
    st = os.fstat(f.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_plain_stderr_outside_systemd_with_context() -> None:
    out = io.StringIO()
    handler = configure_logging("info", environ={}, stream=out)
    assert handler.name == "edgedet-stderr"
    log = logging.getLogger("edgedet.sources.test")
    log.warning("camera lost: %s", "timeout", extra={"camera": "front", "stage": "capture"})
    log.debug("hidden at info")
    text = out.getvalue()
    assert "WARNING edgedet.sources.test [camera=front stage=capture]: camera lost: timeout" in text
    assert "hidden" not in text
    assert not text.startswith("<")


def test_journal_stream_must_match_the_real_fd(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        assert journal_stream_matches(_journal_env(a), a)
        assert not journal_stream_matches(_journal_env(b), a)  # inherited variable, other stream
        assert not journal_stream_matches({"JOURNAL_STREAM": "garbage"}, a)
        assert not journal_stream_matches({}, a)
        assert not journal_stream_matches(_journal_env(a), io.StringIO())  # no fd at all
        handler = configure_logging("info", environ=_journal_env(b), stream=a)
        assert handler.name == "edgedet-stderr"


def test_under_journal_uses_journal_handler_with_fields(tmp_path: Path) -> None:
    journal = pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    with open(tmp_path / "stream", "w") as f:
        handler = configure_logging("debug", environ=_journal_env(f), stream=f)
    assert handler.name == "edgedet-journal"
    assert isinstance(handler, journal.JournalHandler)
    sent: List[Dict[str, Any]] = []

    def capture(MESSAGE: str, **fields: Any) -> None:  # journal.send's signature
        sent.append(dict(fields, MESSAGE=MESSAGE))

    handler.send = capture  # type: ignore[attr-defined]  # journald itself is not running here
    logging.getLogger("edgedet.backends").warning(
        "inference slow", extra={"camera": "yard", "stage": "inference"}
    )
    logging.getLogger("edgedet.app").info("no context")
    first, second = sent
    assert first["CAMERA"] == "yard" and first["STAGE"] == "inference"
    assert first["SYSLOG_IDENTIFIER"] == "edgedet"
    assert first["PRIORITY"] == "4"
    assert first["MESSAGE"] == "edgedet.backends [camera=yard stage=inference]: inference slow"
    assert "CAMERA" not in second and second["PRIORITY"] == "6"


def test_force_journal_false_wins(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as f:
        assert configure_logging("info", False, environ=_journal_env(f), stream=f).name == "edgedet-stderr"


_CHILD = """
import logging, sys
sys.modules["systemd"] = None  # as if systemd-python were not installed
from edgedet.service.logging_setup import configure_logging
h = configure_logging("info")
print(h.name, flush=True)
log = logging.getLogger("edgedet.test")
log.info("started", extra={"camera": "gate"})
try:
    raise ValueError("boom")
except ValueError:
    log.error("inference failed", exc_info=True)
"""


def test_without_systemd_python_under_journal_prefixes_every_line() -> None:
    r, w = os.pipe()
    st = os.fstat(w)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=w, env=env, text=True
    )
    os.close(w)
    with os.fdopen(r) as err:
        lines = err.read().splitlines()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.strip() == "edgedet-syslog-stderr"
    assert lines[0] == "<6>edgedet.test [camera=gate]: started"
    assert lines[1] == "<3>edgedet.test: inference failed"
    # the traceback lines are separate journal entries: each keeps the error priority
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines[1:])
    assert lines[-1] == "<3>ValueError: boom"


def test_reconfigure_replaces_and_levels() -> None:
    configure_logging("info", environ={}, stream=io.StringIO())
    configure_logging("warning", environ={}, stream=io.StringIO())
    ours = [h for h in logging.getLogger().handlers if h.name in HANDLER_NAMES]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.WARNING
    set_level("debug")
    assert logging.getLogger().level == logging.DEBUG
    assert parse_level("ERROR") == logging.ERROR
    with pytest.raises(ValueError):
        parse_level("verbose")
    assert [syslog_priority(x) for x in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
