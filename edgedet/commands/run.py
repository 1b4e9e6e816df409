"""`edgedet run`: load the config, start the daemon, supervise until a signal or a failure."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from edgedet.assets import DEMO_CONFIG
from edgedet.config import Config, load_config
from edgedet.errors import ConfigError, DependencyError, ModelError, SourceError
from edgedet.service.daemon import Daemon
from edgedet.service.notify import Notifier
from edgedet.service.signals import install_signal_handlers

log = logging.getLogger(__name__)

# sysexits.h EX_CONFIG: the configuration (or a file it points to) is wrong; the unit does not restart
EXIT_CONFIG = 78
# start-up failures that no restart heals; others (a backend that failed to start, e.g. the GPU busy)
# exit 1 and systemd tries again
NOT_RESTARTABLE = (ConfigError, ModelError, DependencyError, SourceError)


def load_run_config(path: Optional[Path]) -> Config:

    if path is None:
        log.info("no --config given: running the built-in demo (%s)", DEMO_CONFIG)
        return load_config(DEMO_CONFIG)
    return load_config(path)


def run_daemon(
    config_path: Optional[Path], duration: Optional[float] = None, log_level: Optional[str] = None
) -> int:
    try:
        config = load_run_config(config_path)
    except ConfigError as exc:
        print(f"edgedet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if log_level is None:
        logging.getLogger().setLevel(config.log_level.upper())
    signals = install_signal_handlers()
    daemon = Daemon(config, config_path=config_path, notifier=Notifier())
    try:
        daemon.start()
    except NOT_RESTARTABLE as exc:
        # one line, and an exit code that tells systemd a restart cannot help (RestartPreventExitStatus)
        print(f"edgedet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if duration is not None:
        timer = threading.Timer(duration, signals.stop.set)
        timer.daemon = True
        timer.start()
    started = time.monotonic()
    try:
        code = daemon.run(signals.stop, signals.reload)
    finally:
        log.info("stopping after %.1f s", time.monotonic() - started)
        daemon.stop()
    return code
