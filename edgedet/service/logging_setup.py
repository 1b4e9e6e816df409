"""Logging, configured once by the CLI: the journal (with CAMERA= and STAGE= fields) under systemd,
plain stderr otherwise.

Under systemd means: stderr is the journal stream systemd gave us (``$JOURNAL_STREAM`` holds its
``device:inode``; systemd.exec(5) says to compare them rather than trust the variable's presence, which
children inherit). ``$INVOCATION_ID`` alone is not used: it is also set when the unit sends stderr to a
file or a terminal, where the admin asked for text. Then:

* systemd-python importable: ``systemd.journal.JournalHandler`` (SYSLOG_IDENTIFIER=edgedet), with the
  ``camera``/``stage`` attributes of a record (``log.info(..., extra={"camera": name})``) sent as the
  journal fields CAMERA= and STAGE= (``journalctl -u edgedet CAMERA=front``);
* otherwise stderr with a ``<N>`` syslog priority prefix on every line, which journald turns into the
  entry's priority (SyslogLevelPrefix=, on by default); no timestamp, journald adds its own.

Elsewhere: ``2024-05-01 12:00:00,123 WARNING edgedet.sources [camera=front]: message`` on stderr.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Mapping, Optional, TextIO, Union

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "edgedet"
CONTEXT_FIELDS = ("camera", "stage")
HANDLER_NAMES = ("edgedet-journal", "edgedet-syslog-stderr", "edgedet-stderr")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def parse_level(level: Union[str, int]) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_LEVELS)}") from None


def syslog_priority(levelno: int) -> int:
    """sd-daemon(3) priority for a logging level: <7> debug ... <2> critical."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def journal_stream_matches(
    environ: Optional[Mapping[str, str]] = None, stream: Optional[TextIO] = None
) -> bool:
    """True when ``stream`` (stderr by default) is the journal stream named by ``$JOURNAL_STREAM``."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    target = sys.stderr if stream is None else stream
    try:
        st = os.fstat(target.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (AttributeError, OSError, ValueError):  # no real fd (captured), closed, or a bad value
        return False


def _context(record: logging.LogRecord) -> str:
    parts = [f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None) is not None]
    return f" [{' '.join(parts)}]" if parts else ""


class ContextFormatter(logging.Formatter):
    """``name [camera=x stage=y]: message``, with an optional timestamp/level and ``<N>`` line prefixes."""

    def __init__(self, timestamps: bool = True, syslog_prefix: bool = False) -> None:
        fmt = "%(asctime)s %(levelname)s %(name)s%(edgedet_context)s: %(message)s"
        if not timestamps:
            fmt = "%(name)s%(edgedet_context)s: %(message)s"
        super().__init__(fmt)
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        record.edgedet_context = _context(record)
        text = super().format(record)
        if self.syslog_prefix:
            # journald splits stderr into one entry per line: every line carries the priority
            prefix = f"<{syslog_priority(record.levelno)}>"
            text = "\n".join(prefix + line for line in text.split("\n"))
        return text


class JournalFields(logging.Filter):
    """Copies ``camera``/``stage`` record attributes to the upper-case names journald accepts."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                setattr(record, key.upper(), str(value))
        return True


def _journal_handler() -> Optional[logging.Handler]:
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    cls = getattr(journal, "JournalHandler", None)
    if cls is None:
        return None
    handler: logging.Handler = cls(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    return handler


def configure_logging(
    level: Union[str, int] = "info",
    force_journal: Optional[bool] = None,
    *,
    stream: Optional[TextIO] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> logging.Handler:
    """Install the one root handler (replacing one installed earlier) and return it.

    ``force_journal``: None decides from ``$JOURNAL_STREAM``; True uses the journal (or ``<N>``-prefixed
    stderr without systemd-python); False always writes plain stderr. The handler's ``name`` says which:
    "edgedet-journal", "edgedet-syslog-stderr" or "edgedet-stderr".
    """
    levelno = parse_level(level)
    out = sys.stderr if stream is None else stream
    journal = journal_stream_matches(environ, out) if force_journal is None else force_journal
    handler: Optional[logging.Handler] = None
    if journal:
        handler = _journal_handler()
        if handler is not None:
            handler.name = "edgedet-journal"
            handler.addFilter(JournalFields())
            handler.setFormatter(ContextFormatter(timestamps=False))
        else:
            handler = logging.StreamHandler(out)
            handler.name = "edgedet-syslog-stderr"
            handler.setFormatter(ContextFormatter(timestamps=False, syslog_prefix=True))
    else:
        handler = logging.StreamHandler(out)
        handler.name = "edgedet-stderr"
        handler.setFormatter(ContextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.name in HANDLER_NAMES:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler


def set_level(level: Union[str, int]) -> None:
    """Change the level in place (a reload that only changed ``log_level``)."""
    logging.getLogger().setLevel(parse_level(level))
