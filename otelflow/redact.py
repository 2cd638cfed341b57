"""Hiding secrets in what otelflow writes about the process: its command line, URLs.

``run.json`` records ``sys.argv`` so a run can be told apart and repeated; a token passed
on the command line must not land on disk with it. Values are replaced by
:data:`REDACTED`, as OTLP headers are: the option stays visible, its value does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_name", "redact_argv", "redact_url"]

REDACTED: Final = "<redacted>"

_SECRET_NAME = re.compile(
    r"(token|passw(or)?d|pwd|secret|key|auth|credential|cookie|session[-_]?id|private|signature|bearer)",
    re.IGNORECASE,
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s]+")


def is_secret_name(name: str) -> bool:
    """True for an option or variable name that suggests a credential (``--token``,
    ``--db-password``, ``API_KEY``, ``auth``)."""
    return _SECRET_NAME.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with a password in its user part, and secret-looking query values, hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{REDACTED}@{host}" if ":" in user else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = "&".join(f"{k}={REDACTED if is_secret_name(k) else v}" for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_urls(text: str) -> str:
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def redact_argv(argv: Sequence[object]) -> list[str]:
    """A copy of a command line with the values of secret-looking options hidden.

    Hidden: ``--token=X`` and ``--token X`` (any option whose name looks like a secret),
    ``NAME=X`` assignments with such a name, and passwords or secret query values in URLs
    anywhere. ``argv[0]`` and everything else stay as they are.
    """
    out: list[str] = []
    hide_next = False
    for i, item in enumerate(argv):
        arg = str(item)
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                out.append(REDACTED)
                continue
        if i > 0 and arg.startswith("-") and len(arg) > 1:
            name, eq, _value = arg.partition("=")
            if is_secret_name(name.lstrip("-")):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
        elif i > 0 and "=" in arg and not arg.startswith("="):
            name, _, _value = arg.partition("=")
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) and is_secret_name(name):
                out.append(f"{name}={REDACTED}")
                continue
        out.append(_redact_urls(arg))
    return out
