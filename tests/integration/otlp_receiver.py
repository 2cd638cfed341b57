"""Real OTLP receivers on loopback, for tests that check what otelflow sends over the wire.

* :class:`GrpcReceiver`: a gRPC server (grpcio) with the OTLP ``TraceService``,
  ``MetricsService`` and ``LogsService`` from opentelemetry-proto, on ``127.0.0.1`` and an
  ephemeral port.
* :class:`HttpReceiver`: an ``http.server`` that decodes OTLP/HTTP protobuf export requests
  posted to ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs``, gzip- and deflate-aware.
* :class:`RotelCollector`: the Rotel OpenTelemetry collector (a Rust binary shipped in the
  PyPI wheel ``rotel``) run in the foreground on loopback and stopped by PID, forwarding
  to one of the receivers above.

Both receivers record every request with its headers (gRPC metadata) and can be told to
sleep before answering (``delay_s``), which makes a slow collector, or to serve only some
signals (``signals=("traces",)``), which makes a traces-only backend such as Jaeger or
Tempo: the gRPC one then answers the others UNIMPLEMENTED, the HTTP one ``missing_status``
(404 by default; Jaeger answers 405). ``wait_for`` polls a
condition with a deadline. Use them as context managers; ``stop()`` is idempotent.
"""

from __future__ import annotations

import gzip
import http.server
import importlib.util
import os
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------------------
# Decoded data
# ---------------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    """Python value of an OTLP ``AnyValue``."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(value, kind)
    if kind == "array_value":
        return [any_value(v) for v in raw.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in raw.values}
    return raw


def attributes(kvs: Any) -> dict[str, Any]:
    """A ``repeated KeyValue`` as a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Span:
    """One received span, decoded."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    start_time: int
    end_time: int
    #: (name, time, attributes) of each span event.
    events: tuple[tuple[str, int, dict[str, Any]], ...] = ()
    #: Span ids (hex) the span links to.
    links: tuple[str, ...] = ()
    status_message: str = ""


@dataclass(frozen=True)
class Metric:
    """One received metric (one export's worth of its points), decoded shallowly."""

    name: str
    unit: str
    kind: str  # sum | gauge | histogram | exponential_histogram | summary
    points: list[Any]
    resource: dict[str, Any]


@dataclass(frozen=True)
class LogRecord:
    """One received log record, decoded."""

    trace_id: str
    span_id: str
    severity_text: str
    severity_number: int
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    time: int


@dataclass
class Request:
    """One export request as it arrived."""

    signal: str  # traces | metrics | logs
    headers: dict[str, str]
    encoding: str  # Content-Encoding (HTTP) or "" (gRPC: decompressed by grpcio)
    message: Any


@dataclass
class _Store:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Receiver:
    """What both receivers share: the recorded requests and ways to look at them."""

    def __init__(self, delay_s: float = 0.0, signals: tuple[str, ...] = ("traces", "metrics", "logs")) -> None:
        self.delay_s = delay_s
        self.signals = signals
        self._store = _Store()
        self._stopping = threading.Event()

    # -- recording (server threads) ---------------------------------------------------

    def _record(self, signal: str, headers: dict[str, str], encoding: str, message: Any) -> None:
        if self.delay_s:
            self._stopping.wait(self.delay_s)  # a slow collector, that still stops quickly
        with self._store.lock:
            self._store.requests.append(Request(signal, headers, encoding, message))

    # -- looking (test thread) --------------------------------------------------------

    def requests(self, signal: str | None = None) -> list[Request]:
        """Requests received so far, optionally of one signal."""
        with self._store.lock:
            reqs = list(self._store.requests)
        return [r for r in reqs if signal is None or r.signal == signal]

    def spans(self) -> list[Span]:
        """Every span received so far, in arrival order."""
        out = []
        for req in self.requests("traces"):
            for rs in req.message.resource_spans:
                res = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        out.append(
                            Span(
                                trace_id=sp.trace_id.hex(),
                                span_id=sp.span_id.hex(),
                                parent_span_id=sp.parent_span_id.hex() or None,
                                name=sp.name,
                                attributes=attributes(sp.attributes),
                                resource=res,
                                status_code=sp.status.code,
                                start_time=sp.start_time_unix_nano,
                                end_time=sp.end_time_unix_nano,
                                events=tuple((e.name, e.time_unix_nano, attributes(e.attributes)) for e in sp.events),
                                links=tuple(ln.span_id.hex() for ln in sp.links),
                                status_message=sp.status.message,
                            )
                        )
        return out

    def metrics(self) -> list[Metric]:
        """Every metric received so far (one entry per metric per request)."""
        out = []
        for req in self.requests("metrics"):
            for rm in req.message.resource_metrics:
                res = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data") or ""
                        points = list(getattr(m, kind).data_points) if kind else []
                        out.append(Metric(m.name, m.unit, kind, points, res))
        return out

    def logs(self) -> list[LogRecord]:
        """Every log record received so far, in arrival order."""
        out = []
        for req in self.requests("logs"):
            for rl in req.message.resource_logs:
                res = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        out.append(
                            LogRecord(
                                trace_id=rec.trace_id.hex(),
                                span_id=rec.span_id.hex(),
                                severity_text=rec.severity_text,
                                severity_number=rec.severity_number,
                                body=any_value(rec.body),
                                attributes=attributes(rec.attributes),
                                resource=res,
                                time=rec.time_unix_nano,
                            )
                        )
        return out

    def metric_names(self) -> set[str]:
        """Names of the metrics received so far."""
        return {m.name for m in self.metrics()}

    def headers(self, signal: str | None = None) -> list[dict[str, str]]:
        """Headers (gRPC metadata) of each request, keys lower-cased."""
        return [r.headers for r in self.requests(signal)]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll ``condition()`` until it is truthy; return it, or fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
            time.sleep(0.02)

    def __enter__(self) -> Any:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.stop()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------


class GrpcReceiver(_Receiver):
    """OTLP/gRPC receiver on ``127.0.0.1:<ephemeral>``.

    Args:
        delay_s: Seconds to sleep before answering each export (a slow collector).
        port: Port to bind; 0 picks a free one.
    """

    def __init__(
        self, delay_s: float = 0.0, port: int = 0, signals: tuple[str, ...] = ("traces", "metrics", "logs")
    ) -> None:
        super().__init__(delay_s, signals)
        self.port = port
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` — what OTEL_EXPORTER_OTLP_ENDPOINT takes for gRPC."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> GrpcReceiver:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

        receiver = self

        def meta(context: Any) -> dict[str, str]:
            return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}

        class Traces(tgrpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record("traces", meta(context), "", request)
                return tpb.ExportTraceServiceResponse()

        class Metrics(mgrpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record("metrics", meta(context), "", request)
                return mpb.ExportMetricsServiceResponse()

        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as lgrpc

        class Logs(lgrpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record("logs", meta(context), "", request)
                return lpb.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc-recv"))
        if "traces" in self.signals:
            tgrpc.add_TraceServiceServicer_to_server(Traces(), server)
        if "metrics" in self.signals:  # else grpcio answers UNIMPLEMENTED
            mgrpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        if "logs" in self.signals:
            lgrpc.add_LogsServiceServicer_to_server(Logs(), server)
        self.port = server.add_insecure_port(f"{LOOPBACK}:{self.port}")
        if not self.port:
            raise RuntimeError("the gRPC receiver could not bind a loopback port")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


class HttpReceiver(_Receiver):
    """OTLP/HTTP (protobuf) receiver on ``127.0.0.1:<ephemeral>``.

    Args:
        delay_s: Seconds to sleep before answering each export (a slow collector).
        port: Port to bind; 0 picks a free one.
    """

    def __init__(
        self,
        delay_s: float = 0.0,
        port: int = 0,
        signals: tuple[str, ...] = ("traces", "metrics", "logs"),
        missing_status: int = 404,
    ) -> None:
        super().__init__(delay_s, signals)
        self.port = port
        self.missing_status = missing_status
        self.refused: dict[str, int] = {}  # path -> requests answered missing_status
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL: otelflow appends ``/v1/traces`` and ``/v1/metrics`` to it."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.endpoint}/v1/traces"

    @property
    def metrics_endpoint(self) -> str:
        return f"{self.endpoint}/v1/metrics"

    def start(self) -> HttpReceiver:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

        receiver = self
        routes = {
            path: route
            for path, route in (
                ("/v1/traces", ("traces", tpb.ExportTraceServiceRequest, tpb.ExportTraceServiceResponse)),
                ("/v1/metrics", ("metrics", mpb.ExportMetricsServiceRequest, mpb.ExportMetricsServiceResponse)),
                ("/v1/logs", ("logs", lpb.ExportLogsServiceRequest, lpb.ExportLogsServiceResponse)),
            )
            if route[0] in self.signals
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if receiver._stopping.is_set():  # stopped: a kept-alive connection dies too
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?")[0]
                route = routes.get(path)
                if route is None:
                    with receiver._store.lock:
                        receiver.refused[path] = receiver.refused.get(path, 0) + 1
                    self._answer(receiver.missing_status, b"")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    message = route[1]()
                    message.ParseFromString(body)
                except Exception:  # a malformed request is the sender's bug: say so
                    self._answer(400, b"")
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(route[0], headers, encoding, message)
                self._answer(200, route[2]().SerializeToString())

            def _answer(self, code: int, body: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the exporter gave up waiting (a slow-collector test)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-http-recv", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = None


# ---------------------------------------------------------------------------------------
# Ports, tools
# ---------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout} s")


def missing(what: str, install: str) -> NoReturn:
    """Skip (locally) or fail (under CI) because ``what`` is not installed."""
    message = f"{what} is not installed; run: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def rotel_binary() -> str:
    """Path of the Rotel collector binary in the ``rotel`` wheel (skip/fail if absent)."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        missing("The Rotel collector (PyPI package rotel)", "pip install rotel")
    path = Path(spec.origin).parent / "rotel-agent"
    if not path.is_file():
        missing(f"The Rotel binary ({path})", "pip install --force-reinstall rotel")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


class RotelCollector:
    """The Rotel collector on loopback, forwarding traces and metrics over OTLP/gRPC.

    It listens for OTLP on ``grpc_port`` and ``http_port`` (ephemeral) and exports to
    ``forward_to`` (a :class:`GrpcReceiver` endpoint) without compression or batching
    delay. Runs in the foreground (no ``--daemon``) and is stopped by PID.

    Args:
        forward_to: ``http://127.0.0.1:<port>`` of the receiver behind it.
        workdir: Where its pid and log files go.
    """

    def __init__(self, forward_to: str, workdir: Path) -> None:
        self.binary = rotel_binary()
        self.forward_to = forward_to
        self.workdir = workdir
        self.grpc_port = closed_port()
        self.http_port = closed_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "rotel.log"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def start(self) -> RotelCollector:
        args = [
            self.binary,
            "start",
            "--otlp-grpc-endpoint", f"{LOOPBACK}:{self.grpc_port}",
            "--otlp-http-endpoint", f"{LOOPBACK}:{self.http_port}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", self.forward_to,
            "--otlp-exporter-protocol", "grpc",
            "--otlp-exporter-compression", "none",
            "--batch-timeout", "50ms",
            "--pid-file", str(self.workdir / "rotel.pid"),
            "--log-file", str(self.log),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTEL_", "OTEL_"))}
        out = (self.workdir / "rotel.out").open("wb")
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        out.close()
        try:
            wait_listening(self.grpc_port, 15, self.proc)
            wait_listening(self.http_port, 15, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"Rotel did not start: {exc}\n{self.output()}") from exc
        return self

    def output(self) -> str:
        """What Rotel printed (for failure messages)."""
        text = ""
        for name in ("rotel.out", "rotel.log"):
            p = self.workdir / name
            if p.exists():
                text += p.read_text(errors="replace")[-4000:]
        return text

    def stop(self) -> None:
        """Terminate by PID, wait, kill if it does not exit."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> RotelCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ByteCountingRelay:
    """A TCP relay ``127.0.0.1:<port>`` → ``127.0.0.1:<target>`` counting bytes sent upstream.

    Shows what really crosses the wire (e.g. that gRPC gzip compression is applied, which
    grpcio hides from the servicer).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes_up = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="otlp-relay", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ByteCountingRelay:
        self._thread.start()
        return self

    def _accept(self) -> None:
        self._sock.settimeout(0.05)  # to notice stop() soon
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection((LOOPBACK, self.target_port))
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if up:
                    with self._lock:
                        self.bytes_up += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._closed = True
        for s in (self._sock, *self._conns):
            try:
                s.close()
            except OSError:
                pass
        if self._thread.is_alive():
            self._thread.join(2)

    def __enter__(self) -> ByteCountingRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------
# A small workload with the four levels
# ---------------------------------------------------------------------------------------


def run_workload(tasks: int = 20, failing: int = 1, blocks: int = 1, workflow: str = "etl") -> None:
    """Run ``tasks`` "read" tasks per block plus ``failing`` failing "parse" tasks.

    session → workflow ``workflow`` → block ``load-<i>`` → tasks, on the current telemetry.
    """
    import otelflow

    trk = otelflow.tracker(backend="test")
    with otelflow.workflow_scope(workflow):
        for b in range(blocks):
            with otelflow.block(f"load-{b}"):
                for _ in range(tasks):
                    tid = trk.created(None, "read")
                    trk.submitted(tid)
                    trk.started(tid, worker="w1")
                    trk.completed(tid)
                for _ in range(failing):
                    tid = trk.created(None, "parse")
                    trk.started(tid)
                    trk.failed(tid, ValueError("bad shard"))
