"""The daemon's small HTTP server: /metrics (Prometheus), /healthz, /readyz and /status (JSON).

The standard library's threading HTTP server, driven one request at a time by a runtime Worker (a
failure is kept like any stage's; the supervisor's tick starts the server again). The routes only
read: ``Endpoints`` holds the callables that answer them (the daemon's watchdog health, its readiness,
the status snapshot, the metrics registry), so this module knows nothing of the pipeline. A port
already in use is a logged error, never the end of the daemon: detection matters more than dashboards.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Optional, Tuple, Type

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from edgedet.config import ListenAddress
from edgedet.runtime.ratelimit import RateLimitedLog
from edgedet.runtime.worker import Worker

log = logging.getLogger(__name__)

Check = Callable[[], Tuple[bool, str]]
REQUEST_TIMEOUT_S = 10.0  # a client that stops sending must not hold a handler thread for ever


@dataclass(frozen=True)
class Endpoints:
    """What the routes answer with; every callable is called from a request thread."""

    health: Check  # /healthz: the same verdict that gates the systemd watchdog pings
    ready: Check  # /readyz: model loaded and at least one camera streaming
    status: Callable[[], Mapping[str, Any]]  # /status: the status snapshot as JSON-able data
    registry: CollectorRegistry  # /metrics


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR: a restarted daemon binds again at once although the connections it closed linger in
    # TIME_WAIT; on Linux it never lets two listeners share a port (that is SO_REUSEPORT)
    allow_reuse_address = True

    def __init__(self, address: ListenAddress, handler: Type[BaseHTTPRequestHandler], endpoints: Endpoints):
        self.address_family = address.family
        self.endpoints = endpoints
        self.errors = RateLimitedLog(log, interval_s=60.0)
        super().__init__((address.host, address.port), handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # the base class prints a traceback to stderr; a scraper that hangs up mid-answer is no error
        log.debug("HTTP: request from %s ended early", client_address, exc_info=True)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "[::]" means IPv6 only here; dual-stack behaviour would depend on a sysctl
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "edgedet"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        ep = self.server.endpoints
        try:
            if path == "/metrics":
                body, ctype, code = _metrics(ep.registry, self.headers.get("Accept", ""))
            elif path == "/healthz":
                body, ctype, code = _verdict(ep.health())
            elif path == "/readyz":
                body, ctype, code = _verdict(ep.ready())
            elif path == "/status":
                text = json.dumps(ep.status(), indent=1, sort_keys=True, allow_nan=False)
                body, ctype, code = text.encode() + b"\n", "application/json", 200
            elif path == "/":
                body, ctype, code = b"edgedet: /metrics /healthz /readyz /status\n", "text/plain", 200
            else:
                body, ctype, code = b"not found: try /metrics /healthz /readyz /status\n", "text/plain", 404
        except Exception as exc:
            # a snapshot taken in the middle of a reload may fail; the next scrape will not
            self.server.errors.error(path, "HTTP %s failed: %s: %s", path, type(exc).__name__, exc)
            body, ctype, code = f"error: {exc}\n".encode(), "text/plain", 500
        self.send_response(code)
        self.send_header("Content-Type", ctype if "charset" in ctype else ctype + "; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("HTTP %s: " + format, self.address_string(), *args)


def _verdict(result: Tuple[bool, str]) -> Tuple[bytes, str, int]:
    ok, reason = result
    return (reason + "\n").encode(), "text/plain", 200 if ok else 503


def _metrics(registry: CollectorRegistry, accept: str) -> Tuple[bytes, str, int]:
    encoder, ctype = choose_encoder(accept)
    return encoder(registry), ctype, 200


class HttpServer(Worker):
    """``start()`` binds and serves; returns False (after logging why) when the address cannot be bound."""

    def __init__(self, address: ListenAddress, endpoints: Endpoints) -> None:
        super().__init__("http")
        self.address = address
        self.endpoints = endpoints
        self._server: Optional[_Server] = None

    @property
    def port(self) -> Optional[int]:
        """The bound port (the real one when the config asked for port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.address.url_host}:{self.port}"

    def start(self) -> bool:  # type: ignore[override]
        try:
            self._server = _Server(self.address, _Handler, self.endpoints)
        except OSError as exc:
            log.error(
                "HTTP endpoints disabled: cannot listen on %s:%d (%s); the daemon keeps running without "
                "/metrics and /healthz (set http.listen to a free address, or http.enabled: false)",
                self.address.url_host,
                self.address.port,
                exc.strerror or exc,
            )
            return False
        self._server.timeout = 0.5  # handle_request() returns at least this often: stop and heartbeats
        super().start()
        log.info("HTTP: /metrics /healthz /readyz /status on %s", self.url)
        return True

    def step(self) -> None:
        server = self._server
        if server is not None:
            server.handle_request()  # one request (answered in its own thread) or a 0.5 s timeout

    def teardown(self) -> None:
        if self._server is not None:
            self._server.server_close()

    def close(self, timeout: float = 2.0) -> None:
        self.stop()
        self.join(timeout)
        if self._server is not None and not self.alive:
            self._server.server_close()
            self._server = None
