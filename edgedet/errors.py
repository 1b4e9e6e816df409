"""One exception tree for everything edgedet raises on purpose.

Third-party errors are wrapped (``raise BackendError(...) from exc``) so that the CLI and the supervisor
can tell a user-facing problem (print one line, exit non-zero) from a bug (traceback).
"""


class EdgedetError(Exception):
    """Base of every error edgedet raises deliberately; its message is meant for the user."""


class ConfigError(EdgedetError):
    """The YAML file is malformed, has unknown keys, wrong types or inconsistent values."""

    def __init__(self, message: str, problems: "list[str] | None" = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class DependencyError(EdgedetError):
    """An optional dependency (extra) needed by the configuration is not installed."""


class SourceError(EdgedetError):
    """A camera or video source cannot be opened or has stopped delivering frames."""


class ModelError(EdgedetError):
    """The model file is missing, corrupt, or its outputs match no decoder."""


class BackendError(EdgedetError):
    """The inference backend failed to load or run the model."""


class PublishError(EdgedetError):
    """The MQTT publisher cannot be configured or the outbox cannot store a message."""


class TelemetryError(EdgedetError):
    """A power/temperature reader cannot start."""


def require(module: str, extra: str, what: str) -> object:
    """Import an optional dependency lazily, or raise DependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{what} needs the Python module '{module}', which is not installed: "
            f"pip install 'edgedet[{extra}]' ({exc})"
        ) from exc
