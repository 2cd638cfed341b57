"""User-defined events: ``define_event()`` and ``make_event()``.

A user event is a frozen struct subclass of :class:`UserEvent` whose tag is its full
``"namespace.Name"``. Definitions are validated when they are made, so a typo fails at
import time, not halfway through a workflow. Instances pickle by name and schema, so they
cross process boundaries (spawn included) even though the class is created at run time.
"""

from __future__ import annotations

import copy
import functools
import keyword
import re
import threading
from typing import Any

import msgspec
import msgspec.inspect

from otelflow import _global
from otelflow.errors import EventError
from otelflow.events.model import BUILTIN_EVENTS, Event, new_event_id, now_ns

__all__ = ["UserEvent", "define_event", "event_class", "make_event"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NO_DEFAULT = object()
# Keys every JSONL event line already has: a field of that name would write a duplicate
# key, and readers would lose the event.
_LINE_KEYS = frozenset(("type", "section", "trace_id", "span_id"))

_lock = threading.Lock()
_registry: dict[str, type[Event]] = {cls.__struct_config__.tag: cls for cls in BUILTIN_EVENTS}  # type: ignore[misc]
_schemas: dict[str, tuple[tuple[str, Any, Any], ...]] = {}
_encoder = msgspec.json.Encoder()
_field_sets: dict[type, frozenset[str]] = {}


_current_ids = _global.current_ids  # the one home of "current" sits below events

class UserEvent(Event, frozen=True, kw_only=True):
    """Base of every class made by :func:`define_event`."""

    def __reduce__(self) -> tuple[Any, ...]:
        name = self.event_name
        values = {f: getattr(self, f) for f in self.__struct_fields__}
        return (_rebuild, (name, _schemas[name], values))


def _rebuild(name: str, schema: tuple[tuple[str, Any, Any], ...], values: dict[str, Any]) -> Event:
    """Unpickle a user event, defining its class in this process first if needed."""
    cls = _registry.get(name)
    if cls is None:
        cls = _define(name, schema)
    return cls(**values)


def define_event(name: str, /, **fields: Any) -> type[UserEvent]:
    """Define a user event type.

    Args:
        name: ``"namespace.Name"``; the namespace is required so user events cannot
            collide with otelflow's own (``TaskStarted`` …) or with another library's.
        **fields: ``field=type`` or ``field=(type, default)``. Types are what msgspec can
            encode: ``str``, ``int``, ``float``, ``bool``, ``X | None``, ``list[...]``,
            ``dict[str, ...]``, ``tuple[...]``. The base fields (``event_id``,
            ``event_time``, ``task_id`` …) are reserved.

    Returns:
        The event class. Defining the same name with the same fields again returns the
        same class (so re-imports and worker processes are fine).

    Raises:
        EventError: The name or a field is invalid, or the name is taken by a different
            definition. The message says what to change.

    Example:
        >>> Checkpoint = define_event("ml.Checkpoint", epoch=int, loss=(float, 0.0))
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise EventError(
            f"Event name {name!r} is not valid: use 'namespace.Name' with a namespace "
            "and dot-separated identifiers, e.g. 'ml.Checkpoint'."
        )
    schema: list[tuple[str, Any, Any]] = []
    for field, spec in fields.items():
        if field in _LINE_KEYS:
            raise EventError(
                f"Field {field!r} of event {name!r} is reserved: every event line has the "
                f"keys {', '.join(sorted(_LINE_KEYS))}; choose another name (e.g. {field + '_'!r})."
            )
        if field in Event.BASE_FIELDS:
            raise EventError(
                f"Field {field!r} of event {name!r} is reserved for every event "
                f"(reserved: {', '.join(sorted(Event.BASE_FIELDS))}); choose another name."
            )
        if not _FIELD_RE.fullmatch(field) or keyword.iskeyword(field):
            raise EventError(
                f"Field {field!r} of event {name!r} is not valid: field names are "
                "identifiers that start with a letter."
            )
        if isinstance(spec, tuple):
            if len(spec) != 2:
                raise EventError(
                    f"Field {field!r} of event {name!r} must be a type or a (type, default) "
                    f"pair, not a {len(spec)}-tuple."
                )
            typ, default = spec
        else:
            typ, default = spec, _NO_DEFAULT
        _check_type(name, field, typ, default)
        schema.append((field, typ, default))
    frozen_schema = tuple(schema)
    with _lock:
        existing = _registry.get(name)
        if existing is not None:
            if _schemas.get(name) == frozen_schema:
                return existing  # type: ignore[return-value]
            what = "a built-in event" if name not in _schemas else "a different definition"
            raise EventError(
                f"Event name {name!r} is already used by {what}; pick another name or "
                "define it once with the same fields."
            )
        return _define_locked(name, frozen_schema)


def _check_type(name: str, field: str, typ: Any, default: Any) -> None:
    try:
        msgspec.json.Decoder(typ)  # raises TypeError for types msgspec cannot handle
        if isinstance(msgspec.inspect.type_info(typ), (msgspec.inspect.AnyType, msgspec.inspect.CustomType)):
            raise TypeError("untyped")  # `object`/`Any` would accept values JSON cannot hold
    except TypeError as exc:
        raise EventError(
            f"Field {field!r} of event {name!r} has type {typ!r}, which cannot be serialized "
            "to JSON; use str, int, float, bool, X | None, list, dict or tuple of those."
        ) from exc
    if default is not _NO_DEFAULT:
        from otelflow.validate import problem

        why = problem(default)
        if why is not None:
            raise EventError(
                f"Default {default!r} for field {field!r} of event {name!r} cannot be written "
                f"to JSON: {why}."
            )
        try:
            msgspec.convert(default, typ)
        except (msgspec.ValidationError, TypeError) as exc:
            raise EventError(
                f"Default {default!r} for field {field!r} of event {name!r} does not match "
                f"its type {typ!r}: {exc}."
            ) from exc


def _define(name: str, schema: tuple[tuple[str, Any, Any], ...]) -> type[UserEvent]:
    with _lock:
        existing = _registry.get(name)
        if existing is not None:
            return existing  # type: ignore[return-value]
        return _define_locked(name, schema)


def _define_locked(name: str, schema: tuple[tuple[str, Any, Any], ...]) -> type[UserEvent]:
    # Required fields first is not needed: every field is keyword-only.
    struct_fields = [
        (f, t) if d is _NO_DEFAULT else (f, t, _default(d)) for f, t, d in schema
    ]
    try:
        cls = _defstruct(name, struct_fields)
    except (TypeError, ValueError) as exc:  # what msgspec refuses that the checks above let by
        raise EventError(f"Event {name!r} cannot be defined: {exc}.") from exc
    cls.__qualname__ = name
    _registry[name] = cls
    _schemas[name] = schema
    return cls


def _defstruct(name: str, struct_fields: list[Any]) -> type[UserEvent]:
    cls = msgspec.defstruct(
        name.rsplit(".", 1)[1],
        struct_fields,
        bases=(UserEvent,),
        module=__name__,
        frozen=True,
        kw_only=True,
        tag=name,
        omit_defaults=False,  # a reader without the schema must see every field's value
    )
    event_cls: type[UserEvent] = cls  # type: ignore[assignment]  # defined with bases=(UserEvent,)
    return event_cls


def _default(value: Any) -> Any:
    """A field default: mutable containers get a fresh copy per event (a default factory)."""
    if isinstance(value, (list, dict, set, bytearray)) and value:
        return msgspec.field(default_factory=functools.partial(copy.deepcopy, value))
    return value


def event_class(name: str) -> type[Event]:
    """Return the event class registered under ``name``.

    Raises:
        EventError: No event of that name is defined.
    """
    cls = _registry.get(name)
    if cls is None:
        raise EventError(
            f"No event named {name!r} is defined; define it first with "
            f"otelflow.define_event({name!r}, field=type, ...)."
        )
    return cls


def make_event(name_or_class: str | type[Event], /, **fields: Any) -> Event:
    """Create an event, stamping ``event_id``, ``event_time`` and the current scope ids.

    Args:
        name_or_class: An event name (``"ml.Checkpoint"``) or an event class.
        **fields: The event's fields. ``event_time`` (ns since the epoch) may be given to
            record something that happened earlier.

    Raises:
        EventError: Unknown event name, unknown field, or a missing required field.
    """
    cls = event_class(name_or_class) if isinstance(name_or_class, str) else name_or_class
    allowed = _field_sets.get(cls)
    if allowed is None:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise EventError(f"{name_or_class!r} is not an otelflow event class or name.")
        allowed = _field_sets[cls] = frozenset(cls.__struct_fields__)
    if not allowed.issuperset(fields):
        unknown = set(fields) - allowed
        valid = sorted(set(cls.__struct_fields__) - {"event_id", "emit_time"})
        raise EventError(
            f"Event {cls.__struct_config__.tag!r} has no field(s) {sorted(unknown)}; "
            f"valid fields: {', '.join(valid)}."
        )
    session_id, workflow_id, block_id = _current_ids()
    if "session_id" not in fields:
        fields["session_id"] = session_id
    if "workflow_id" not in fields and "block_id" not in fields:
        fields["workflow_id"] = workflow_id
        fields["block_id"] = block_id
    if "event_time" not in fields:
        fields["event_time"] = now_ns()
    try:
        return cls(event_id=new_event_id(), **fields)
    except TypeError as exc:
        raise EventError(f"Cannot make event {cls.__struct_config__.tag!r}: {exc}.") from exc


def encodable(event: Event) -> bool:
    """Return True if ``event`` encodes to JSON as is (used by tests and sanitizers)."""
    try:
        _encoder.encode(event)
    except (TypeError, msgspec.EncodeError, OverflowError):
        return False
    return True
