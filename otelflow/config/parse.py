"""Parsers that turn a raw environment string, or an argument, into a checked value.

Each ``parse_*`` function takes the value, its :class:`Source` (which variable or argument
it came from) and the :class:`Rule` it must follow; it accepts the raw environment string
or an argument of the matching Python type, and raises
:class:`~otelflow.errors.ConfigError` with one sentence naming the variable or argument,
the bad value, and what is accepted. The variables and their rules are declared in
:mod:`otelflow.config.env`; :func:`otelflow.config.load_settings` applies them. Everything
here is pure and thread-safe; nothing reads ``os.environ``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

from otelflow.errors import ConfigError

_T = TypeVar("_T")

Kind = Literal["bool", "int", "float", "str", "path", "url", "choice", "choices", "headers", "mapping"]
"""How a variable's text is read: ``choices`` is a comma-separated list of choices;
``headers`` and ``mapping`` are ``key=value,key2=value2`` lists with URL-encoded values
(``headers`` lower-cases the keys, as HTTP and gRPC metadata need)."""

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_HEADER_KEY: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LOG_LEVELS: Final[Mapping[str, int]] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """What values a variable or argument accepts.

    Attributes:
        kind: How the value is read (see :data:`Kind`).
        expected: What is accepted, as the end of a sentence ("a number of seconds > 0");
            used verbatim in error messages and in the documentation.
        choices: Allowed words for ``choice`` and ``choices`` (compared case-insensitively).
        low: Smallest allowed number, or None.
        low_inclusive: Whether ``low`` itself is allowed.
        high: Largest allowed number (inclusive), or None.
        pattern: Regular expression a ``str`` value must match in full, or None.
        or_zero: Also accept exactly 0 (an "off" value below ``low``).
    """

    kind: Kind
    expected: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    pattern: str | None = None
    or_zero: bool = False


# ---------------------------------------------------------------------------------------
# Error reporting and parsers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from, so that an error message can name it.

    Attributes:
        name: The variable or argument name.
        is_argument: True for a keyword argument, False for an environment variable.
        secret: Never echo the value (it may hold credentials).
    """

    name: str
    is_argument: bool = False
    secret: bool = False

    def fail(self, value: object, expected: str, detail: str | None = None) -> NoReturn:
        """Raise :class:`ConfigError` for ``value``, in one sentence.

        Args:
            value: The rejected value.
            expected: What is accepted, as the end of a sentence.
            detail: What exactly is wrong, when the value alone does not show it.

        Raises:
            ConfigError: Always.
        """
        who = f"Argument {self.name}" if self.is_argument else self.name
        shown = " (value hidden: it may hold credentials)" if self.secret else f"={value!r}"
        why = f" ({detail})" if detail else ""
        raise ConfigError(f"{who}{shown} is not valid{why}: expected {expected}.")


Parser = Callable[[object, Source, Rule], _T]
"""A ``parse_*`` function: ``(value, source, rule)`` to the checked value."""


def _text(value: object, src: Source, rule: Rule) -> str:
    if not isinstance(value, str):
        src.fail(value, rule.expected)
    return value.strip()


def parse_bool(value: object, src: Source, rule: Rule) -> bool:
    """Read a boolean: a bool, or true/false/1/0/yes/no/on/off in any case."""
    if isinstance(value, bool):
        return value
    word = _text(value, src, rule).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    src.fail(value, rule.expected)


def _check_range(number: float, value: object, src: Source, rule: Rule) -> None:
    if rule.or_zero and number == 0:
        return
    if rule.low is not None and (number < rule.low or (number == rule.low and not rule.low_inclusive)):
        src.fail(value, rule.expected)
    if rule.high is not None and number > rule.high:
        src.fail(value, rule.expected)


def parse_int(value: object, src: Source, rule: Rule) -> int:
    """Read an integer (an int, or its decimal text) within ``rule``'s bounds."""
    if isinstance(value, bool):
        src.fail(value, rule.expected)
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(_text(value, src, rule), 10)
        except ValueError:
            src.fail(value, rule.expected)
    _check_range(number, value, src, rule)
    return number


def parse_float(value: object, src: Source, rule: Rule) -> float:
    """Read a finite number (an int, a float, or its text) within ``rule``'s bounds."""
    if isinstance(value, bool):
        src.fail(value, rule.expected)
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(_text(value, src, rule))
        except ValueError:
            src.fail(value, rule.expected)
    if not math.isfinite(number):
        src.fail(value, rule.expected)
    _check_range(number, value, src, rule)
    return number


def parse_str(value: object, src: Source, rule: Rule) -> str:
    """Read a non-empty string, matching ``rule.pattern`` in full when there is one."""
    text = _text(value, src, rule)
    if not text or (rule.pattern is not None and re.fullmatch(rule.pattern, text) is None):
        src.fail(value, rule.expected)
    return text


def parse_path(value: object, src: Source, rule: Rule) -> Path:
    """Read a filesystem path (a str or path-like); ``~`` is expanded, nothing else resolved."""
    if isinstance(value, os.PathLike):
        text = os.fspath(value)
        if not isinstance(text, str):
            src.fail(value, rule.expected)
    else:
        text = _text(value, src, rule)
    if not text:
        src.fail(value, rule.expected)
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~user that does not exist, or no home directory
        src.fail(value, rule.expected + " (its ~ could not be expanded to a home directory)")
        raise  # pragma: no cover - fail() raises


def parse_url(value: object, src: Source, rule: Rule) -> str:
    """Read an ``http://`` or ``https://`` URL with a host (and, if given, a valid port)."""
    text = _text(value, src, rule)
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        src.fail(value, rule.expected)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        src.fail(value, rule.expected)
    return text


def parse_choice(value: object, src: Source, rule: Rule) -> str:
    """Read one of ``rule.choices`` (case-insensitive); returns the choice as declared."""
    word = _text(value, src, rule).lower()
    for choice in rule.choices:
        if word == choice.lower():
            return choice
    src.fail(value, rule.expected)


def parse_choices(value: object, src: Source, rule: Rule) -> tuple[str, ...]:
    """Read a comma-separated list (or a list/tuple) of ``rule.choices``.

    Duplicates and empty items are dropped, order is kept. ``none`` means "no item" and
    returns ``()``; combining it with anything else is an error.
    """
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        src.fail(value, rule.expected)
    words: list[str] = []
    for item in items:
        word = item.strip().lower()
        if not word:
            continue
        if word not in rule.choices:
            src.fail(value, rule.expected, f"{item.strip()!r} is not one of them")
        if word not in words:
            words.append(word)
    if not words:
        src.fail(value, rule.expected)
    if "none" in words:
        if len(words) > 1:
            src.fail(value, rule.expected, "'none' cannot be combined with other values")
        return ()
    return tuple(words)


def parse_mapping(value: object, src: Source, rule: Rule) -> dict[str, str]:
    """Read ``key=value,key2=value2`` (W3C-baggage-like, values URL-decoded) or a mapping.

    For ``headers`` rules the keys must be HTTP header names and are lower-cased. Empty
    items are skipped. A mapping argument must have str keys and values.
    """
    headers = rule.kind == "headers"
    if isinstance(value, Mapping):
        pairs: list[tuple[object, object]] = list(value.items())
        decode = False
    else:
        text = _text(value, src, rule)
        pairs = []
        for position, item in enumerate(text.split(","), start=1):
            if not item.strip():
                continue
            key_text, sep, value_text = item.partition("=")
            if not sep:
                src.fail(value, rule.expected, f"item {position} has no '='")
            pairs.append((key_text, value_text))
        decode = True
    result: dict[str, str] = {}
    for position, (key, raw) in enumerate(pairs, start=1):
        if not isinstance(key, str) or not isinstance(raw, str):
            src.fail(value, rule.expected, f"item {position} is not a pair of strings")
        name = key.strip()
        if not name or (headers and _HEADER_KEY.fullmatch(name) is None):
            src.fail(value, rule.expected, f"item {position} has no valid key")
        result[name.lower() if headers else name] = unquote(raw.strip()) if decode else raw
    return result


def parse_set_global(value: object, src: Source, rule: Rule) -> str:
    """Read ``auto`` or a boolean (a bool, or :func:`parse_bool`'s words) as ``auto``/``true``/``false``."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() != "auto"):
        try:
            return "true" if parse_bool(value, src, rule) else "false"
        except ConfigError:
            pass
    return parse_choice(value, src, rule)


def parse_log_level(value: object, src: Source, rule: Rule) -> int:
    """Read a ``logging`` level: one of ``rule.choices`` by name (any case), or its number."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _LOG_LEVELS.values():
            src.fail(value, rule.expected)
        return value
    return _LOG_LEVELS[parse_choice(value, src, rule)]


__all__ = [
    "Kind",
    "Parser",
    "Rule",
    "Source",
    "parse_bool",
    "parse_choice",
    "parse_choices",
    "parse_float",
    "parse_int",
    "parse_log_level",
    "parse_mapping",
    "parse_path",
    "parse_set_global",
    "parse_str",
    "parse_url",
]
