"""Run-time value checks: what a tracker call or an emitted event may carry.

otelflow never raises into user code at run time, so a value of the wrong type is either
*sanitized* (a task id that is an int becomes its text; a lone surrogate becomes U+FFFD)
or *rejected* (a CPU time of ``"0.5"`` is left out; an event whose field holds the wrong
type is not accepted) — and either way counted in ``summary()["dropped"]`` and warned
about once. The checks here are the slow paths: callers test the common case (a ``str``,
an ``int``) inline and come here only when it fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

__all__ = [
    "MAX_DEPTH",
    "TIME_MAX_NS",
    "TIME_MIN_NS",
    "check_event",
    "clean_attributes",
    "clean_count",
    "clean_id",
    "clean_seconds",
    "clean_text",
    "clean_time",
    "json_safe",
    "problem",
]

TIME_MIN_NS: Final = 946_684_800 * 10**9
"""Earliest accepted event time: 2000-01-01 UTC, in ns since the epoch."""
TIME_MAX_NS: Final = 4_102_444_800 * 10**9
"""Latest accepted event time: 2100-01-01 UTC, in ns since the epoch."""
MAX_DEPTH: Final = 32
"""Deepest nesting of lists/dicts an event value may have."""
MAX_TEXT: Final = 4096
"""Longest task id or task name kept; longer ones are cut."""

_ATTR_SCALARS = (str, bool, int, float)
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as text that UTF-8 (and so JSON and OTLP) can hold, at most ``limit`` long.

    Non-strings become ``str(value)`` (``repr`` if that fails); lone surrogates become
    U+FFFD. Never raises.
    """
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001 - a broken __str__
            value = f"<unprintable {type(value).__qualname__}>"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub("\ufffd", value)
    return value if len(value) <= limit else value[:limit]


def clean_id(value: object) -> str:
    """A task id as text (see :func:`clean_text`); an int id is its decimal text."""
    return clean_text(value)


def clean_time(value: object) -> int | None:
    """An event time in ns since the epoch, or None (then "now" is used) if implausible.

    Accepted: an ``int`` (or integral ``float``) between 2000 and 2100. Anything else —
    ``-1``, seconds instead of nanoseconds, a string — is None.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    return value if TIME_MIN_NS <= value <= TIME_MAX_NS else None


def clean_seconds(value: object) -> float | None:
    """A duration in seconds (finite, >= 0), or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f >= 0 else None


def clean_count(value: object) -> int | None:
    """A non-negative integer count (a byte count, a pid), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def clean_attributes(value: object) -> tuple[dict[str, str | int | float | bool] | None, int]:
    """Span attributes as OTel accepts them, and how many entries had to be fixed.

    Keys become text; values must be str, bool, int or float (finite); a list or tuple of
    those becomes a tuple; anything else becomes its text. Not a mapping at all: None.
    """
    if value is None:
        return None, 0
    if not isinstance(value, Mapping):
        return None, 1
    out: dict[str, Any] = {}
    fixed = 0
    try:
        items = list(value.items())
    except Exception:  # noqa: BLE001 - a broken mapping
        return None, 1
    for key, val in items:
        k, v = key, val
        if type(k) is not str or not k.isascii():
            k = clean_text(key, 256)
            fixed += k != key
        if isinstance(v, _ATTR_SCALARS):
            if isinstance(v, float) and not math.isfinite(v):
                v, fixed = str(v), fixed + 1
            elif isinstance(v, str) and not v.isascii():
                v = clean_text(val, 1 << 16)
                fixed += v != val
        elif isinstance(v, list | tuple) and all(isinstance(x, _ATTR_SCALARS) for x in v):
            v = tuple(clean_text(x) if isinstance(x, str) else x for x in val)
        else:
            v, fixed = clean_text(val, 1 << 16), fixed + 1
        out[k] = v
    return out, fixed


def problem(value: object, depth: int = 0) -> str | None:
    """Why ``value`` cannot be written as JSON faithfully, or None if it can.

    Catches what msgspec would write wrongly or not at all: NaN/infinity (written as
    ``null``), lone surrogates, nesting deeper than :data:`MAX_DEPTH`, and non-string
    dict keys.
    """
    if depth > MAX_DEPTH:
        return f"it is nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone surrogate, which UTF-8 cannot encode"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} cannot be stored in JSON"
    if value is None or isinstance(value, int | bytes):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"dict key {k!r} is not a string"
            why = problem(k, depth + 1) or problem(v, depth + 1)
            if why:
                return why
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for v in value:
            why = problem(v, depth + 1)
            if why:
                return why
        return None
    if isinstance(value, msgspec.Struct):
        for f in value.__struct_fields__:
            why = problem(getattr(value, f), depth + 1)
            if why:
                return f"field {f!r}: {why}"
        return None
    return None  # other types are caught by the type check (msgspec.convert)


_NONE = type(None)
_EXACT: dict[type, tuple[type, ...]] = {
    msgspec.inspect.IntType: (int,),
    msgspec.inspect.FloatType: (float, int),
    msgspec.inspect.StrType: (str,),
    msgspec.inspect.BoolType: (bool,),
    msgspec.inspect.NoneType: (_NONE,),
}
_Plan = tuple[tuple[str, frozenset[type]], ...]
_plans: dict[type, _Plan | None] = {}


def _exact_types(info: msgspec.inspect.Type) -> frozenset[type] | None:
    """The exact Python types a scalar field accepts, or None for anything else."""
    if isinstance(info, msgspec.inspect.UnionType):
        out: set[type] = set()
        for t in info.types:
            sub = _exact_types(t)
            if sub is None:
                return None
            out |= sub
        return frozenset(out)
    exact = _EXACT.get(type(info))
    if exact is None:
        return None
    plain = not any(getattr(info, c, None) is not None for c in ("ge", "gt", "le", "lt", "min_length", "max_length"))
    return frozenset(exact) if plain else None


def _plan(cls: type) -> _Plan | None:
    """Per event class: (field, exact types) for every field, or None if a field is not a
    plain scalar (then :func:`check_event` takes the full path)."""
    try:
        info = msgspec.inspect.type_info(cls)
    except Exception:  # noqa: BLE001 - not inspectable: always the full check
        return None
    plan = []
    for field in getattr(info, "fields", ()):
        exact = _exact_types(field.type)
        if exact is None:
            return None
        plan.append((field.name, exact))
    return tuple(plan)


def check_event(event: msgspec.Struct) -> str | None:
    """Why ``event`` must not be accepted, or None: every field has its declared type
    and can be written to JSON as it is. Used by ``emit()`` only.

    Events whose fields are all plain scalars (most user events) are checked by exact
    type, ~0.5 µs; others (lists, dicts, literals) take the full check, a few µs.
    """
    cls = type(event)
    plan = _plans.get(cls, False)
    if plan is False:
        plan = _plans[cls] = _plan(cls)
    if plan is not None:
        for name, exact in plan:  # type: ignore[union-attr]
            v = getattr(event, name)
            t = type(v)
            if t not in exact:
                break
            if t is str:
                if not v.isascii():
                    break
            elif t is float and not math.isfinite(v):
                break
        else:
            return None
    return _full_check(event)


def _full_check(event: msgspec.Struct) -> str | None:
    why = problem(event)
    if why is not None:
        return why
    try:
        msgspec.convert(msgspec.structs.asdict(event), type(event))
    except msgspec.ValidationError as exc:
        return str(exc)
    except (TypeError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def json_safe(value: object, depth: int = 0) -> object:
    """``value`` as plain JSON data: lone surrogates replaced, NaN/inf as text, nesting
    cut at :data:`MAX_DEPTH`, unknown objects as their ``repr``. Never raises."""
    if depth > MAX_DEPTH:
        return f"<cut: nested deeper than {MAX_DEPTH} levels>"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return clean_text(value, len(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, msgspec.Struct):
        out: dict[str, object] = {}
        tag = type(value).__struct_config__.tag
        if isinstance(tag, str):
            out[type(value).__struct_config__.tag_field or "type"] = tag
        for f in value.__struct_fields__:
            out[f] = json_safe(getattr(value, f), depth + 1)
        return out
    if isinstance(value, Mapping):
        try:
            return {clean_text(k, 256): json_safe(v, depth + 1) for k, v in value.items()}
        except Exception:  # noqa: BLE001
            return "<unreadable mapping>"
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    try:
        return clean_text(repr(value), 1 << 16)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(value).__qualname__}>"
