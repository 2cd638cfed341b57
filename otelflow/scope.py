"""Workflow and block scopes.

Scopes live in :mod:`contextvars`, so they follow threads started with a copied context
and asyncio tasks. Entering a scope also makes its span the current OTel span, so spans
the user creates inside become children of the workflow/block span.

Without a running telemetry, scopes still yield ids and nest, but record nothing.
"""

from __future__ import annotations

import functools
import inspect
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from otelflow import _global
from otelflow.errors import ConfigError
from otelflow.events.model import (
    BlockEnded,
    BlockStarted,
    WorkflowEnded,
    WorkflowStarted,
    new_event_id,
    now_ns,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "AdoptedScope",
    "Scope",
    "ScopeRef",
    "active_scope",
    "adopt_scope",
    "block",
    "current_ids",
    "current_scope",
    "enter_adopted_scope",
    "enter_remote_scope",
    "exit_adopted_scope",
    "exit_remote_scope",
    "workflow_scope",
]

F = TypeVar("F", bound=Callable[..., Any])


class Scope:
    """One entered workflow or block: its id, name, span id and enclosing scope."""

    __slots__ = ("id", "kind", "name", "parent", "ref", "span_id", "workflow")

    def __init__(self, kind: str, id: str, name: str, span_id: int, parent: Scope | None) -> None:
        self.kind = kind
        self.id = id
        self.name = name
        self.span_id = span_id
        self.parent = parent
        self.workflow: Scope | None = (
            self if kind == "workflow" else (parent.workflow if parent is not None else None)
        )
        self.ref: ScopeRef | None = None  # made once, by current_scope()

    @property
    def workflow_id(self) -> str | None:
        return self.workflow.id if self.workflow is not None else None

    @property
    def block_id(self) -> str | None:
        return self.id if self.kind == "block" else None

    def __repr__(self) -> str:
        return f"Scope({self.kind}, {self.id!r}, {self.name!r})"


_scope = _global.scope_var  # the one scope variable (otelflow._global holds what is current)


def active_scope() -> Scope | None:
    """Return the innermost entered :class:`Scope` of this context (core use), or None."""
    return _scope.get()


class ScopeRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """A workflow/block scope as a small value: picklable and JSON-encodable.

    Made by :func:`current_scope` where the scope was entered; made current elsewhere (another
    thread, asyncio task, process or host) by :func:`adopt_scope`.

    Attributes:
        workflow_id: The enclosing workflow's id.
        workflow_name: Its name.
        block_id: The innermost block's id, if the scope is a block.
        block_name: Its name.
        span_id: The innermost scope's span id (16 hex digits), if telemetry was running.
    """

    workflow_id: str | None = None
    workflow_name: str | None = None
    block_id: str | None = None
    block_name: str | None = None
    span_id: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The set fields as a plain dict (for engines that carry dicts, e.g. Dask annotations)."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not None}

    @classmethod
    def from_dict(cls, data: object) -> ScopeRef | None:
        """Back from :meth:`to_dict`; None for anything that is not such a dict (never raises)."""
        if not isinstance(data, dict):
            return None
        fields = {f: v for f in cls.__struct_fields__ if isinstance(v := data.get(f), str) and v}
        return cls(**fields) if fields else None


def current_scope() -> ScopeRef | None:
    """Return the current workflow/block scope as a picklable :class:`ScopeRef`, or None.

    Engines that run work in threads, asyncio tasks or processes they create themselves
    capture it where the work is submitted and :func:`adopt_scope` it where the work runs.
    """
    scope = _scope.get()
    if scope is None:
        return None
    if scope.ref is not None:
        return scope.ref
    wf = scope.workflow
    blk = scope if scope.kind == "block" else None
    scope.ref = ScopeRef(
        workflow_id=wf.id if wf is not None else None,
        workflow_name=wf.name if wf is not None else None,
        block_id=blk.id if blk is not None else None,
        block_name=blk.name if blk is not None else None,
        span_id=f"{scope.span_id:016x}" if scope.span_id else None,
    )
    return scope.ref


current_ids = _global.current_ids


def enter_remote_scope(workflow_id: str | None, block_id: str | None = None) -> Token[Scope | None]:
    """Make a workflow/block scope entered elsewhere (another process) current here.

    Nothing is recorded about the scope itself (its own process does that); events and
    tasks made while it is current carry its ids, so they group with it. Undo with
    :func:`exit_remote_scope`. Prefer :func:`adopt_scope`.
    """
    wf = Scope("workflow", workflow_id, workflow_id, 0, None) if workflow_id else None
    scope = Scope("block", block_id, block_id, 0, wf) if block_id else wf
    return _scope.set(scope)


def exit_remote_scope(token: Token[Scope | None]) -> None:
    """Undo :func:`enter_remote_scope` (tolerates being called from another context)."""
    try:
        _scope.reset(token)
    except ValueError:
        pass


@contextmanager
def adopt_scope(scope: ScopeRef | None) -> Iterator[ScopeRef | None]:
    """Make ``scope`` (from :func:`current_scope`, possibly in another process) current here.

    Tasks created and events emitted inside carry its workflow and block ids; where the
    scope's span is known and telemetry runs, that span is the current OTel span, so user
    spans and tasks made inside hang under it. Nothing is recorded about the scope itself —
    the process that entered it does that. ``None`` adopts "no scope". Never raises.

    Yields:
        The adopted scope.
    """
    entry = enter_adopted_scope(scope)
    try:
        yield scope if isinstance(scope, ScopeRef) else None
    finally:
        exit_adopted_scope(entry)


class AdoptedScope:
    """What :func:`enter_adopted_scope` made current: undo it with :func:`exit_adopted_scope`."""

    __slots__ = ("otel_token", "token")

    def __init__(self, token: Token[Scope | None], otel_token: object | None) -> None:
        self.token = token
        self.otel_token = otel_token


# The last adopted scope and the Scope it became: a worker adopts the same one for task
# after task (its carrier is decoded once), so it is built once.
_last_adopted: tuple[ScopeRef | None, Scope | None] = (None, None)


def enter_adopted_scope(scope: ScopeRef | None, *, span: bool = True) -> AdoptedScope:
    """:func:`adopt_scope` without the ``with``: for engines that enter and exit in two hooks.

    Args:
        scope: From :func:`current_scope`, or None for "no scope".
        span: Also make the scope's span current (False when the caller makes a span of its
            own current over it at once, such as a task's).

    Returns:
        The handle to pass to :func:`exit_adopted_scope`. Never raises.
    """
    global _last_adopted
    if scope is not None and not isinstance(scope, ScopeRef):
        scope = None  # a wrong value must not break the engine: run unscoped
    last_ref, inner = _last_adopted
    if scope is None:
        inner = None
    elif scope is not last_ref:
        wf_id, blk_id = scope.workflow_id, scope.block_id
        wf = Scope("workflow", wf_id, scope.workflow_name or wf_id, 0, None) if wf_id else None
        inner = Scope("block", blk_id, scope.block_name or blk_id, 0, wf) if blk_id else wf
        _last_adopted = (scope, inner)  # one tuple swap: safe for threads that adopt at once
    token = _scope.set(inner)
    otel_token = None
    if span and scope is not None and scope.span_id:
        tel = _global.current()
        if tel is not None and tel.active:
            try:
                span_id = int(scope.span_id, 16)
            except ValueError:
                span_id = 0
            if span_id:
                otel_token = otel_context.attach(
                    otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(tel.span_context(span_id)))
                )
    return AdoptedScope(token, otel_token)


def exit_adopted_scope(entry: AdoptedScope) -> None:
    """Undo :func:`enter_adopted_scope` (tolerates being called from another context)."""
    if entry.otel_token is not None:
        try:
            otel_context.detach(entry.otel_token)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a context switched elsewhere; nothing to undo
            pass
    exit_remote_scope(entry.token)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{random.getrandbits(32):08x}"


def _new_span_id() -> int:
    return random.getrandbits(64) or 1


class _ScopeContext:
    """Context manager (sync and async) and decorator for one scope kind."""

    def __init__(self, kind: str, name: str, scope_id: str | None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"A {kind} name must be a non-empty string, not {name!r}.")
        self._kind = kind
        self._name = name
        self._id = scope_id
        # One entry per active entry of this object: it may be entered from several
        # threads or tasks at once (a module-level `wf = workflow_scope("x")`), so each
        # exit takes its own entry — the one whose scope is current in its context.
        self._state: list[tuple[Scope, Token[Scope | None], object | None]] = []
        self._lock = threading.Lock()

    # -- context manager ----------------------------------------------------------------
    def __enter__(self) -> str:
        parent = _scope.get()
        sid = self._id or _new_id("wf" if self._kind == "workflow" else "blk")
        scope = Scope(self._kind, sid, self._name, _new_span_id(), parent)
        token = _scope.set(scope)
        otel_token = None
        tel = _global.current()
        if tel is not None and tel.active:
            otel_token = otel_context.attach(
                otel_trace.set_span_in_context(
                    otel_trace.NonRecordingSpan(tel.span_context(scope.span_id))
                )
            )
            if self._kind == "workflow":
                now = now_ns()
                ev: Any = WorkflowStarted(
                    event_id=new_event_id(),
                    event_time=now,
                    emit_time=now,
                    session_id=tel.session_id,
                    workflow_id=sid,
                    workflow_name=self._name,
                )
            else:
                now = now_ns()
                ev = BlockStarted(
                    event_id=new_event_id(),
                    event_time=now,
                    emit_time=now,
                    session_id=tel.session_id,
                    workflow_id=scope.workflow_id,
                    block_id=sid,
                    block_name=self._name,
                    parent_block_id=parent.block_id if parent is not None else None,
                )
            tel.scope_started(scope, ev)
        with self._lock:
            self._state.append((scope, token, otel_token))
        return sid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._take_entry()
        if entry is None:
            return  # exited more often than entered: nothing to close
        scope, token, otel_token = entry
        failed = exc_type is not None and not issubclass(exc_type, GeneratorExit)
        tel = _global.current()
        if tel is not None and tel.active:
            cls = WorkflowEnded if self._kind == "workflow" else BlockEnded
            now = now_ns()
            tel.emit(
                cls(
                    event_id=new_event_id(),
                    event_time=now,
                    emit_time=now,
                    session_id=tel.session_id,
                    workflow_id=scope.workflow_id,
                    block_id=scope.block_id,
                    status="failed" if failed else "completed",
                    error_type=_qualname(exc_type) if failed else None,
                )
            )
        if otel_token is not None:
            try:
                otel_context.detach(otel_token)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a context switched elsewhere; nothing to undo
                pass
        try:
            _scope.reset(token)
        except ValueError:  # exited in another context (e.g. a generator); restore parent
            _scope.set(scope.parent)

    def _take_entry(self) -> tuple[Scope, Token[Scope | None], object | None] | None:
        current = _scope.get()
        with self._lock:
            state = self._state
            for i in range(len(state) - 1, -1, -1):
                if state[i][0] is current:
                    return state.pop(i)
            # Not current here (exited from another context, e.g. a generator): the
            # latest entry, as before.
            return state.pop() if state else None

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator --------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        kind, name, scope_id = self._kind, self._name, self._id
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with _ScopeContext(kind, name, scope_id):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _ScopeContext(kind, name, scope_id):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def _qualname(tp: type[BaseException] | None) -> str | None:
    if tp is None:
        return None
    mod = tp.__module__
    return tp.__qualname__ if mod == "builtins" else f"{mod}.{tp.__qualname__}"


def workflow_scope(name: str | None = None, *, workflow_id: str | None = None) -> _ScopeContext:
    """Group the work done inside into one workflow (one workflow span).

    Use as ``with``/``async with`` (yields the workflow id) or as a decorator.

    Args:
        name: Human-readable workflow name (a metric attribute: keep it low-cardinality).
            Defaults to ``"unnamed"``; the id is generated either way.
        workflow_id: Use this id instead of a generated ``wf-<hex8>``.
    """
    # An unnamed workflow gets a fresh id per entry (also as a decorator) and the name
    # "unnamed": names are metric attributes, so a per-run id must never become one.
    return _ScopeContext("workflow", name or "unnamed", workflow_id)


def block(name: str, *, block_id: str | None = None) -> _ScopeContext:
    """Group work inside a workflow into a named block (one block span). Blocks nest.

    Use as ``with``/``async with`` (yields the block id) or as a decorator on sync and
    async functions.
    """
    return _ScopeContext("block", name, block_id)
