"""The `http:` section: where the metrics and health endpoints listen (pure: parsing only)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pydantic import Field, field_validator

from edgedet.configbase import Strict

DEFAULT_LISTEN = "127.0.0.1:9464"  # loopback: nothing is exposed to the network unless the file says so


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP literal, without brackets
    port: int  # 0: any free port (tests)
    family: int  # socket.AF_INET or socket.AF_INET6

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL: IPv6 literals in brackets."""
        return f"[{self.host}]" if self.family == socket.AF_INET6 else self.host


def parse_listen(text: str) -> ListenAddress:
    """``"127.0.0.1:9464"``, ``"0.0.0.0:9464"``, ``"[::1]:9464"`` or ``"[::]:9464"``; raises ValueError.

    Only IP literals: a host name could resolve to several addresses, and the listener must bind exactly
    where the file says (loopback by default, so the endpoints are never exposed by accident).
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: an IPv6 address needs the form [addr]:port, e.g. [::1]:9464")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected host:port, e.g. 127.0.0.1:9464")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0, [::1] or [::])"
        ) from None
    if address.version == 6 and not text.startswith("["):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return ListenAddress(str(address), int(port), family)


class HttpConfig(Strict):
    """Prometheus /metrics, /healthz, /readyz and /status over HTTP (no authentication: keep it local)."""

    enabled: bool = True
    listen: str = Field(default=DEFAULT_LISTEN)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)
