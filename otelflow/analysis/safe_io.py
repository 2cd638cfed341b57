"""Reading run directories that may be hostile: FIFOs, loops, garbage, crafted fields.

A run directory is input like any other: it may come from a crashed process, a full
disk, a copy gone wrong, or someone who made it on purpose. The reader uses these helpers
so that nothing there can hang it (a FIFO named ``*.jsonl``), crash it (a field of the
wrong type), make it write outside where it was told (a crafted ``run_id``), or make a
report say something untrue ("completed, 0 tasks" for a file it could not read).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MAX_META_BYTES",
    "file_problem",
    "line_problem",
    "meta_notes",
    "open_regular",
    "read_small",
    "run_status",
    "safe_file_stem",
    "torn_or_garbage",
]

MAX_META_BYTES: Final = 16 * 1024 * 1024
"""Largest ``run.json`` read; a bigger one is not a run's metadata."""

ENDED_WITHOUT_STOP: Final = "ended without stop() (killed?)"
"""Status of a run whose ``run.json`` says "running" though its process is gone."""


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a run file, or None if it is a readable regular file.

    Never opens the file, so a FIFO or a device cannot block; follows symlinks (a loop is
    a problem, not a hang).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket or device"
        return f"is {kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def open_regular(path: Path) -> Any:
    """Open ``path`` for binary reading only if it is a regular file (never blocks).

    ``O_NONBLOCK`` makes opening a FIFO return at once; the file is then checked with
    ``fstat`` before anything is read from it.

    Raises:
        OSError: It cannot be opened, or is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small(path: Path, limit: int = MAX_META_BYTES) -> bytes:
    """The whole of a small regular file.

    Raises:
        FileNotFoundError: It does not exist.
        OSError: It is not a regular file, cannot be read, or is larger than ``limit``.
    """
    with open_regular(path) as f:
        data: bytes = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes")
    return data


def torn_or_garbage(tail: bytes) -> bool:
    """True if an unterminated last line looks like a cut-off JSON object (a torn write).

    A torn line starts with ``{"`` and is text; binary garbage is not blamed on a kill.
    """
    line = tail.rsplit(b"\n", 1)[-1]
    if not line.startswith(b'{"'):
        return False
    try:
        line[:-4].decode("utf-8")  # a cut may split the last character
    except UnicodeDecodeError:
        return False
    return True


# -- line fields --------------------------------------------------------------------------------

_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))
_OPT_DICT = (dict, type(None))
_LIST = (list,)
_OPT_LIST = (list, type(None))

_FIELD_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "section": _STR,
    "type": _STR,
    "trace_id": _OPT_STR,
    "span_id": _OPT_STR,
    "parent_span_id": _OPT_STR,
    "session_id": _OPT_STR,
    "workflow_id": _OPT_STR,
    "block_id": _OPT_STR,
    "task_id": _OPT_STR,
    "task_name": _OPT_STR,
    "workflow_name": _OPT_STR,
    "block_name": _OPT_STR,
    "name": _OPT_STR,
    "kind": _OPT_STR,
    "status": _OPT_STR,
    "backend": _OPT_STR,
    "worker": _OPT_STR,
    "error_type": _OPT_STR,
    "error_message": _OPT_STR,
    "event_id": _OPT_INT,
    "event_time": _INT,
    "emit_time": _OPT_INT,
    "start_time": _OPT_INT,
    "end_time": _OPT_INT,
    "time": _OPT_INT,
    "pid": _OPT_INT,
    "peak_rss_bytes": _OPT_INT,
    "cpu_time_s": _OPT_NUM,
    "attributes": _OPT_DICT,
    "depends_on": _LIST,
    "events": _OPT_LIST,
    "links": _OPT_LIST,
    "points": _OPT_LIST,
}


def line_problem(obj: dict[str, Any]) -> str | None:
    """Why a decoded line cannot be used (a field of the wrong type), or None.

    Only otelflow's own fields are checked; ``depends_on`` must hold strings. User event
    fields are the user's and pass as they are.
    """
    types = _FIELD_TYPES
    for key, value in obj.items():
        want = types.get(key)
        if want is not None and not isinstance(value, want):
            if key in ("event_time", "start_time", "end_time", "time") and isinstance(value, bool):
                return f"field {key!r} is a bool"
            return f"field {key!r} is a {type(value).__name__}"
        if key == "depends_on" and not all(isinstance(d, str) for d in value):
            return "field 'depends_on' holds a non-string"
    for key in ("event_time", "start_time", "end_time", "time"):
        if isinstance(obj.get(key), bool):
            return f"field {key!r} is a bool"
    section = obj.get("section")
    if section == "event" and "event_time" not in obj:
        return "an event line without 'event_time'"
    return None


# -- run.json ------------------------------------------------------------------------------------


def _pid_gone(pid: object) -> bool:
    """True if no process ``pid`` exists on this host (a still-running one, or a pid we
    may not signal, counts as alive)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _last_record(files: list[Path]) -> int | None:
    mtimes = []
    for f in files:
        try:
            mtimes.append(os.stat(f).st_mtime_ns)
        except OSError:
            continue
    return max(mtimes) if mtimes else None


def _stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_status(meta: Mapping[str, Any], files: list[Path], host: str | None = None) -> tuple[str, list[str]]:
    """The run's status and what is known about how it ended, as report notes.

    ``run.json`` says "running" until ``stop()`` rewrites it. If the process that wrote
    it is gone (checked only on the same host), the run ended without ``stop()``:
    killed, or ended by a signal otelflow did not handle. Problems recorded at ``stop()``
    (a full disk: lines lost) are notes too.
    """
    import socket

    raw = meta.get("status")
    status = raw if isinstance(raw, str) and raw else "unknown"
    notes: list[str] = []
    if status == "running":
        here = host if host is not None else socket.gethostname()
        if meta.get("host") == here and _pid_gone(meta.get("pid")):
            status = ENDED_WITHOUT_STOP
            last = _last_record(files)
            when = f" — last record at {_stamp(last)}" if last else ""
            notes.append(f"the run {ENDED_WITHOUT_STOP}{when}; work after that is not on disk")
    problems = meta.get("problems")
    if isinstance(problems, list):
        notes.extend(str(p)[:500] for p in problems if isinstance(p, str))
    return status, notes


def meta_notes(problem: str | None) -> list[str]:
    """A note for an unreadable ``run.json`` (the run is read without its metadata)."""
    return [f"{problem}; read without its metadata"] if problem else []


# -- output names ---------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_stem(text: object, fallback: str = "run") -> str:
    """``text`` as a file name with no directory part: only ``A-Za-z0-9._-``, not starting
    with a dot, at most 128 characters (a crafted ``run_id`` cannot name another place)."""
    stem = _UNSAFE.sub("_", str(text)).lstrip(".")[:128]
    return stem or fallback
