"""The live view's HTTP server: the page at ``/``, the SSE stream at ``/events``. Stdlib only.

A ``ThreadingHTTPServer`` on its own daemon thread; each SSE client gets a handler thread
that reads the shared :class:`~otelflow.live.hub.EventHub` from its own cursor, so a
stalled browser blocks only its own thread's socket write (with a timeout), never the
run. It serves exactly three paths — ``/``, ``/events`` and ``/healthz`` — and answers
404 to anything else, so no file of the run directory (or elsewhere) is reachable
through it. It binds ``127.0.0.1`` unless told otherwise and warns when bound to all
interfaces.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from otelflow.errors import ConfigError
from otelflow.live.hub import EventHub
from otelflow.live.page import PAGE
from otelflow.live.sources import RunFollower, tap

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["LiveServer", "serve_path"]

_log = logging.getLogger("otelflow")
_WRITE_TIMEOUT_S = 30.0
_ALL_INTERFACES = ("0.0.0.0", "::", "")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/events":
            query = parse_qs(parts.query)
            last = self.headers.get("Last-Event-ID") or next(iter(query.get("last_event_id", [])), None)
            self._stream(last)
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:
        self._send(404 if urlsplit(self.path).path not in ("/", "/index.html", "/healthz") else 200,
                   "text/plain; charset=utf-8", b"")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stream(self, last_event_id: str | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(_WRITE_TIMEOUT_S)  # a dead client frees its thread
        try:
            for chunk in self.server.hub.sse(last_event_id):
                if self.server.closing.is_set() and not self.server.hub.closed:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
        except (OSError, ValueError):
            pass  # the client went away (or stalled past the timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], hub: EventHub, page: bytes) -> None:
        self.hub = hub
        self.page = page
        self.closing = threading.Event()
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, _Handler)


class LiveServer:
    """A running live view: ``address``, ``url``, ``hub``; :meth:`close` stops it.

    Build one with :meth:`for_telemetry` (in-process) or :meth:`for_run` (a run directory).
    """

    def __init__(self, hub: EventHub | None, host: str = "127.0.0.1", port: int = 0,
                 follower: RunFollower | None = None, title: str = "otelflow live") -> None:
        hub = hub if hub is not None else EventHub()
        if host in _ALL_INTERFACES:
            _log.warning(
                "otelflow live view is bound to all interfaces (%s): anyone who can reach this "
                "host on port %d can watch the run. Bind 127.0.0.1 unless that is intended.",
                host or "0.0.0.0", port,
            )
        try:
            self._server = _Server((host, port), hub, PAGE.replace("{{TITLE}}", _html(title)).encode())
        except OSError as exc:
            raise ConfigError(
                f"The live view cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "port (live_port=0 or --port 0 picks a free one)."
            ) from exc
        self.hub = hub
        self._follower = follower
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="otelflow-live-server", daemon=True,
        )
        self._thread.start()

    @classmethod
    def for_telemetry(cls, telemetry: Telemetry, host: str = "127.0.0.1", port: int = 0,
                      maxlen: int = 100_000) -> LiveServer:
        """Serve ``telemetry``'s events as they happen (``start_telemetry(live_port=...)``)."""
        server = cls(EventHub(maxlen), host, port, title=f"otelflow · {telemetry.run_id}")
        server.watch(telemetry)
        return server

    def watch(self, telemetry: Telemetry) -> None:
        """Feed this server's hub from ``telemetry`` (its dispatcher must not run yet, or
        events before this call are not in the stream)."""
        tap(telemetry, self.hub)
        _log.info("otelflow live view of run %s: %s", telemetry.run_id, self.url)

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
                maxlen: int = 1_000_000, poll: float = 0.25) -> LiveServer:
        """Serve a run directory's events: followed while it runs, replayed when finished."""
        hub = EventHub(maxlen)
        follower = RunFollower(run_dir, hub, poll)
        server = cls(hub, host, port, follower=follower, title=f"otelflow · {Path(run_dir).name}")
        follower.start()
        return server

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` it listens on (the real port when 0 was asked for)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def close(self, grace: float = 2.0) -> None:
        """Stop serving. Clients get up to ``grace`` seconds to receive what is left. Idempotent."""
        if self._follower is not None:
            self._follower.stop()
        self.hub.close()
        deadline = time.monotonic() + grace
        while self.hub.clients and time.monotonic() < deadline:
            time.sleep(0.02)
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def serve_path(run: str | None, runs_dir: str | None = None, host: str = "127.0.0.1", port: int = 8765) -> int:
    """``otelflow serve``: serve a run (or a runs directory's latest) until Ctrl-C."""
    from otelflow.analysis.reader import open_run

    path = open_run(run, runs_dir=runs_dir).path
    server = LiveServer.for_run(path, host, port)
    print(f"Serving the live view of run {path.name} at {server.url} (Ctrl-C to stop).", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close(0.5)
    print("Stopped.", file=sys.stderr)
    return 0
