"""The OTel global tracer provider, installed only when asked (or when none is set).

OTel lets the global provider be set once per process. Instead of installing one
session's provider (which would be dead after its ``stop()``), otelflow installs a small
delegating provider once: every span started through it goes to the *current* session's
provider, or is a no-op span when none is running. So ``trace.get_tracer(__name__)`` at
import time keeps working across sessions, and spans made inside tasks and scopes become
their children.

Policy (``OTELFLOW_SET_GLOBAL_PROVIDERS``): ``auto`` installs it only if no other global
tracer provider is set (so otelflow never replaces someone else's); ``true`` tries even
then (OTel refuses and warns if one is already set); ``false`` never installs it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import Attributes

from otelflow import _global

_lock = threading.Lock()
_installed = False


class SessionTracerProvider(trace_api.TracerProvider):
    """Global tracer provider that delegates to the running otelflow session."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace_api.Tracer:
        return _SessionTracer(instrumenting_module_name, instrumenting_library_version, schema_url)


class _SessionTracer(trace_api.Tracer):
    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        self._args = (name, version, schema_url)
        self._cache: tuple[Any, trace_api.Tracer] | None = None
        self._noop = trace_api.NoOpTracer()

    def _delegate(self) -> trace_api.Tracer:
        tel = _global.current()
        provider = tel.tracer_provider if tel is not None and tel.active else None
        if provider is None:
            return self._noop
        cached = self._cache
        if cached is not None and cached[0] is provider:
            return cached[1]
        tracer = provider.get_tracer(*self._args)
        self._cache = (provider, tracer)
        return tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._delegate().start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        with self._delegate().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        ) as span:
            yield span


def maybe_install(policy: str) -> bool:
    """Install the delegating global tracer provider according to ``policy``."""
    global _installed
    if policy == "false":
        return False
    with _lock:
        if _installed:
            return True
        current = trace_api.get_tracer_provider()
        if policy == "auto" and not isinstance(current, trace_api.ProxyTracerProvider):
            return False
        trace_api.set_tracer_provider(SessionTracerProvider())
        _installed = isinstance(trace_api.get_tracer_provider(), SessionTracerProvider)
        return _installed


def _reinit_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_lock_in_child)


def session_stopped(telemetry: Any) -> None:
    """Nothing to undo: the delegate falls back to no-op spans once no session runs."""
