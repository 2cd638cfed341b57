"""Read a run directory: ``run.json`` plus one JSONL file per process.

A run directory needs no live session to be read: this module only parses files. Every
iterator streams: per file, lines are decoded one at a time with a :mod:`msgspec`
decoder, put in order through a small reorder buffer (files are written almost in time
order), and merged across files with :func:`heapq.merge`. Memory is bounded by the buffer,
not by the size of the run.

A process that was killed can leave a torn (incomplete) last line; it is skipped and
counted in :attr:`Run.torn_lines`. Any other line that does not decode is skipped, counted
in :attr:`Run.bad_lines`, and warned about once per run.

Example::

    run = open_run(".otelflow/runs")  # the latest run there
    for ev in run.events(types={"TaskFailed"}):
        print(ev["task_id"], ev["error_type"])
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from otelflow.analysis import safe_io, tal
from otelflow.errors import OtelflowError

if TYPE_CHECKING:
    from otelflow.analysis._lines import EventLine, SpanLine
    from otelflow.analysis._tables import RunData, TaskInfo
    from otelflow.analysis.frame import Frames

__all__ = [
    "DEFAULT_RUNS_DIR",
    "RUNS_DIR_ENV",
    "Run",
    "RunInfo",
    "RunNotFoundError",
    "default_runs_dir",
    "is_run_dir",
    "list_runs",
    "open_run",
]

_log = logging.getLogger("otelflow.analysis")

RUNS_DIR_ENV = "OTELFLOW_RUNS_DIR"
"""Environment variable naming the runs directory (default ``./.otelflow/runs``)."""

DEFAULT_RUNS_DIR = Path(".otelflow") / "runs"
"""The runs directory used when neither an argument nor :data:`RUNS_DIR_ENV` names one."""

DEFAULT_REORDER_WINDOW = 20_000
"""How many lines per file the reorder buffer holds (see :class:`Run`)."""

_END_KEYS = {"event": "event_time", "span": "end_time", "metric": "time", "log": "event_time"}

Line = dict[str, Any]


class RunNotFoundError(OtelflowError, FileNotFoundError):
    """No run directory was found where one was expected."""


def default_runs_dir() -> Path:
    """Return the runs directory: ``$OTELFLOW_RUNS_DIR`` or ``./.otelflow/runs``."""
    env = os.environ.get(RUNS_DIR_ENV, "").strip()  # as the session reads it: stripped, ~ expanded
    if not env:
        return DEFAULT_RUNS_DIR
    try:
        return Path(env).expanduser()
    except RuntimeError:
        return Path(env)


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Return True if ``path`` is a directory holding ``run.json`` or ``*.jsonl`` files."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "run.json").is_file():
        return True
    return any(p.glob("*.jsonl")) or any(p.glob("*.jsonl.zst"))


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    """Read ``run.json``; return ``({}, reason)`` if it is missing or unreadable."""
    f = path / "run.json"
    try:
        raw = safe_io.read_small(f)  # never blocks on a FIFO; bounded in size
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"could not read {f}: {exc}"
    try:
        meta = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return {}, f"{f} is not valid JSON ({exc})"
    if not isinstance(meta, dict):
        return {}, f"{f} does not hold a JSON object"
    return meta, None


@dataclass(frozen=True)
class RunInfo:
    """One run in a runs directory, as listed by :func:`list_runs`.

    Attributes:
        run_id: The run id (``run.json``'s ``run_id``, else the directory name).
        path: The run directory.
        start_time: Start in ns since the epoch (``run.json``, else the newest file's mtime).
        end_time: End in ns, or None while running or unknown.
        status: ``"running"``, ``"completed"`` or ``"unknown"`` (no ``run.json``).
        service_name: The service name recorded in ``run.json``, if any.
        meta: The whole ``run.json`` (empty if missing or unreadable).
    """

    run_id: str
    path: Path
    start_time: int
    end_time: int | None
    status: str
    service_name: str | None
    meta: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _info(path: Path) -> RunInfo:
    meta, _ = _read_meta(path)
    start = meta.get("start_time")
    files = _run_files(path)
    if not isinstance(start, int) or isinstance(start, bool):
        mtimes = [f.stat().st_mtime_ns for f in files if safe_io.file_problem(f) is None]
        start = max(mtimes) if mtimes else path.stat().st_mtime_ns
    end = meta.get("end_time")
    service = meta.get("service_name")
    return RunInfo(
        run_id=str(meta.get("run_id") or path.name),
        path=path,
        start_time=start,
        end_time=end if isinstance(end, int) and not isinstance(end, bool) else None,
        status=safe_io.run_status(meta, files)[0],
        service_name=service if isinstance(service, str) else None,
        meta=meta,
    )


def list_runs(runs_dir: str | os.PathLike[str] | None = None) -> list[RunInfo]:
    """List the runs in a runs directory, oldest first.

    Args:
        runs_dir: The directory holding one sub-directory per run; default
            :func:`default_runs_dir`.

    Returns:
        One :class:`RunInfo` per run directory, sorted by start time.

    Raises:
        RunNotFoundError: ``runs_dir`` does not exist or is not a directory.
    """
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        raise RunNotFoundError(
            f"No runs directory at {root}: expected a directory holding one run directory "
            f"per run (set {RUNS_DIR_ENV} or pass the path)."
        )
    runs = [_info(p) for p in root.iterdir() if is_run_dir(p)]
    runs.sort(key=lambda r: (r.start_time, r.run_id))
    return runs


def _resolve(path: str | os.PathLike[str] | None, runs_dir: str | os.PathLike[str] | None) -> Path:
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if path is None:
        return _latest(root)
    p = Path(path)
    if p.is_file() and p.suffix == ".jsonl" and tal.is_tal_file(p):
        return p  # a RHAPSODY TAL checkpoint: that file alone is the run
    if p.is_file() and (p.name == "run.json" or p.suffix == ".jsonl"):
        return p.parent
    if p.is_dir() and not (p / "run.json").is_file():
        tal_files = [f for f in p.glob("*.jsonl") if tal.is_tal_file(f)]
        if tal_files:  # a TAL checkpoint directory: its newest session file
            return max(tal_files, key=lambda f: (f.stat().st_mtime_ns, f.name))
    if is_run_dir(p):
        return p
    if p.is_dir():
        return _latest(p)
    if p.exists():
        raise RunNotFoundError(
            f"{p} is not a run: expected a run directory (run.json and *.jsonl files) or a runs directory holding them."
        )
    # Not a path: a run id (or a unique prefix of one) in the runs directory.
    if root.is_dir() and not p.is_absolute() and len(p.parts) == 1:
        if is_run_dir(root / p):
            return root / p
        matches = [r for r in list_runs(root) if r.run_id.startswith(str(p)) or r.path.name.startswith(str(p))]
        if len(matches) == 1:
            return matches[0].path
        if len(matches) > 1:
            names = ", ".join(r.run_id for r in matches[:5])
            raise RunNotFoundError(f"Run id prefix {str(p)!r} is ambiguous in {root}: it matches {names}.")
    raise RunNotFoundError(f"No run at {p}: expected a run directory, a runs directory, or a run id in {root}.")


def _latest(root: Path) -> Path:
    if not root.is_dir():
        raise RunNotFoundError(
            f"No runs directory at {root}: expected a run directory or a directory of runs "
            f"(set {RUNS_DIR_ENV} or pass the path)."
        )
    runs = list_runs(root)
    if not runs:
        raise RunNotFoundError(f"No runs in {root}: expected run directories holding run.json and *.jsonl files.")
    return runs[-1].path


def open_run(
    path: str | os.PathLike[str] | None = None,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    reorder_window: int = DEFAULT_REORDER_WINDOW,
) -> Run:
    """Open a run for reading.

    Args:
        path: A run directory; a runs directory (its latest run is opened); a run's
            ``run.json`` or JSONL file; or a run id, or a unique prefix of one, in
            ``runs_dir``. None opens the latest run in ``runs_dir``. A RHAPSODY TAL
            checkpoint file (``*.telemetry.jsonl``), or a directory of them (the newest
            is opened), is read as a run too (see :mod:`otelflow.analysis.tal`).
        runs_dir: Where run ids are looked up; default :func:`default_runs_dir`.
        reorder_window: Lines per file the reorder buffer holds (see :class:`Run`).

    Returns:
        The :class:`Run`. Nothing is read but ``run.json`` and the file tails until you
        iterate.

    Raises:
        RunNotFoundError: Nothing there looks like a run. Its message says what was
            expected.
    """
    return Run(_resolve(path, runs_dir), reorder_window=reorder_window)


def _torn_tail(path: Path) -> bool:
    """True if the file's last line is incomplete (no final newline) and looks like a
    cut-off line, not garbage."""
    try:
        with safe_io.open_regular(path) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return False
            f.seek(max(0, size - 65536))
            tail = f.read()
            return not tail.endswith(b"\n") and safe_io.torn_or_garbage(tail)
    except OSError:
        return False


class Run:
    """A recorded run: metadata plus streaming, time-ordered access to its lines.

    Ordering: each file's lines pass through a reorder buffer of ``reorder_window`` lines
    and the files are merged with :func:`heapq.merge`, so the result is in time order
    whenever no line was written more than ``reorder_window`` lines late. A line later than
    that is yielded as soon as it is read and counted in :attr:`out_of_order`.

    Not thread-safe; iterate from one thread at a time. Several iterations may be open at
    once (each reopens the files).
    """

    def __init__(self, path: str | os.PathLike[str], *, reorder_window: int = DEFAULT_REORDER_WINDOW) -> None:
        """Read ``run.json`` and list the JSONL files of the run directory ``path``.

        Args:
            path: The run directory.
            reorder_window: Lines per file the reorder buffer holds.

        Raises:
            RunNotFoundError: ``path`` is not a run directory.
        """
        self.path = Path(path)
        #: The files in RHAPSODY's TAL checkpoint format, translated as they are read.
        self.tal_files: frozenset[Path] = frozenset()
        if self.path.is_file() and tal.is_tal_file(self.path):
            meta, problem = tal.tal_meta(self.path), None
            files = [self.path]
            self.tal_files = frozenset(files)
        elif not is_run_dir(self.path):
            raise RunNotFoundError(f"{self.path} is not a run directory: expected run.json and *.jsonl files in it.")
        else:
            meta, problem = _read_meta(self.path)
            files = _run_files(self.path)
        self.reorder_window = max(1, reorder_window)
        if problem:
            _log.warning("otelflow: %s; reading the run without its metadata.", problem)
        #: The ``run.json`` metadata (empty if missing or unreadable).
        self.meta: dict[str, Any] = meta
        #: ``*.jsonl`` entries that are not readable regular files (name -> why), skipped.
        self.skipped_files: dict[str, str] = {}
        readable = []
        for f in files:
            why = safe_io.file_problem(f)
            if why is None:
                readable.append(f)
            else:
                self.skipped_files[f.name] = why
        #: The run's JSONL files (``*.jsonl`` and zstd ``*.jsonl.zst``), one per process, by name
        #: (or the one TAL checkpoint file).
        self.files: list[Path] = readable
        self._status, notes = safe_io.run_status(meta, readable)
        #: What is known about problems with the run directory, as report notes.
        self.notes: list[str] = [
            *safe_io.meta_notes(problem),
            *notes,
            *(f"{name} {why}; skipped" for name, why in self.skipped_files.items()),
        ]
        # Incomplete last lines: plain files are checked now, compressed ones as they are read.
        self._torn: set[Path] = {f for f in self.files if not _is_zst(f) and _torn_tail(f)}
        #: Lines yielded later than the reorder window allowed (time order not exact).
        self.out_of_order: int = 0
        self._bad: dict[Path, int] = {}
        self._warned = False
        self._decoder = msgspec.json.Decoder()
        #: Show a progress bar on stderr while :attr:`data` reads the files (needs tqdm;
        #: the CLI turns it on when stderr is a terminal).
        self.progress: bool = False

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, run_id={self.run_id!r}, files={len(self.files)})"

    # -- metadata ---------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run id (``run.json``'s, else the directory name)."""
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def service_name(self) -> str:
        """The service name recorded in ``run.json`` (``"unknown_service"`` if none)."""
        return str(self.meta.get("service_name") or "unknown_service")

    @property
    def trace_id(self) -> str | None:
        """The run's trace id (32 hex), from ``run.json``, if recorded."""
        tid = self.meta.get("trace_id")
        return str(tid) if tid else None

    @property
    def status(self) -> str:
        """``"running"``, ``"completed"``, ``"ended without stop() (killed?)"`` (``run.json``
        says running, but its process is gone), or ``"unknown"`` without ``run.json``."""
        return self._status

    @property
    def start_time(self) -> int | None:
        """Start of the run in ns since the epoch, from ``run.json``."""
        t = self.meta.get("start_time")
        return t if isinstance(t, int) and not isinstance(t, bool) else None

    @property
    def end_time(self) -> int | None:
        """End of the run in ns since the epoch; None while it runs or if unknown."""
        t = self.meta.get("end_time")
        return t if isinstance(t, int) and not isinstance(t, bool) else None

    @property
    def torn_lines(self) -> int:
        """Incomplete last lines (a killed process), one at most per file.

        For a compressed file (``*.jsonl.zst``) this is known once the file was read.
        """
        return len(self._torn)

    @property
    def bad_lines(self) -> int:
        """Undecodable lines (other than torn last lines) met so far while iterating."""
        return sum(self._bad.values())

    # -- iteration --------------------------------------------------------------------------

    def _file_lines(
        self, path: Path, keep: Callable[[Line], bool] | None, needles: tuple[bytes, ...] | None = None
    ) -> Iterator[Line]:
        """Decode one file's lines in file order, skipping torn and bad lines.

        ``needles``: a line containing none of these bytes cannot match ``keep`` and is
        skipped without being decoded (a JSON string value always appears quoted as is).
        """
        decode = self._decoder.decode
        bad = 0
        translate = tal.Translator() if path in self.tal_files else None
        if translate is not None:
            needles = None  # TAL lines name things differently: filter after translating
        f = self._open(path)
        if f is None:
            return
        with f:
            lineno = 0
            for raw in self._raw_lines(path, f) if _is_zst(path) else f:
                lineno += 1
                if needles is not None and not any(n in raw for n in needles):
                    continue
                if not raw.endswith(b"\n"):
                    # The last line of a killed (or still running) process; counted in
                    # torn_lines when the run was opened.
                    try:
                        obj = decode(raw)
                    except msgspec.DecodeError:
                        if not safe_io.torn_or_garbage(raw):  # garbage, not a torn write
                            bad += 1
                            self._note_bad(path, lineno, "undecodable bytes")
                        break
                    if not isinstance(obj, dict):
                        bad += 1
                        self._note_bad(path, lineno, "not a JSON object")
                        break
                elif raw.isspace():
                    continue
                else:
                    try:
                        obj = decode(raw)
                    except msgspec.DecodeError as exc:
                        bad += 1
                        self._note_bad(path, lineno, str(exc))
                        continue
                    if not isinstance(obj, dict):
                        bad += 1
                        self._note_bad(path, lineno, "not a JSON object")
                        continue
                why = safe_io.line_problem(obj) if translate is None else None  # TAL: its own names
                if why is not None:
                    bad += 1
                    self._note_bad(path, lineno, why)
                    continue
                if translate is not None:
                    for out in translate(obj):
                        if keep is None or keep(out):
                            yield out
                elif keep is None or keep(obj):
                    yield obj
        # A complete pass counts the file's bad lines exactly once (a filtered pass, which
        # skips lines undecoded, gives a lower bound).
        self._bad[path] = max(bad, self._bad.get(path, 0)) if needles is not None else bad

    def _open(self, path: Path) -> IO[bytes] | None:
        """Open one run file for reading its lines (a ``.zst`` one is decompressed as read).

        Only a regular file is opened, so a FIFO swapped in since the run was listed can
        never block the reader."""
        try:
            if _is_zst(path):
                _need_zstd(path)
            f: IO[bytes] = safe_io.open_regular(path)
        except OSError as exc:
            _log.warning("otelflow: could not open %s: %s; skipping it.", path, exc)
            self.skipped_files.setdefault(path.name, f"cannot be read ({exc})")
            return None
        return f

    def _raw_lines(self, path: Path, f: IO[bytes]) -> Iterator[bytes]:
        """The lines of an open run file; a compressed file's torn tail is noted here."""
        if not _is_zst(path):
            yield from f
            return
        for raw, complete in _zst_lines(f):
            if not complete:
                # A frame cut short by a killed process, or a damaged one: what came
                # before it stands, the rest of the file is not read.
                self._torn.add(path)
                if raw:
                    yield raw  # no final newline: the readers treat it as torn
                return
            yield raw

    def _note_bad(self, path: Path, lineno: int, why: str) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(
                "otelflow: skipped an undecodable line in %s (line %d: %s); further ones are "
                "skipped too and counted in Run.bad_lines.",
                path,
                lineno,
                why,
            )

    def _ordered(
        self, lines: Iterator[Line], key: Callable[[Line], int], idx: int
    ) -> Iterator[tuple[int, int, int, Line]]:
        """Yield ``(time, file index, seq, line)`` through a bounded reorder heap."""
        heap: list[tuple[int, int, int, Line]] = []
        window = self.reorder_window
        push, pop = heapq.heappush, heapq.heappop
        last = -(2**63)
        for seq, line in enumerate(lines):
            push(heap, (key(line), idx, seq, line))
            if len(heap) > window:
                item = pop(heap)
                if item[0] < last:
                    self.out_of_order += 1
                else:
                    last = item[0]
                yield item
        while heap:
            item = pop(heap)
            if item[0] < last:
                self.out_of_order += 1
            yield item

    def _stream(
        self,
        keep: Callable[[Line], bool] | None,
        key: Callable[[Line], int],
        ordered: bool,
        needles: tuple[bytes, ...] | None = None,
    ) -> Iterator[Line]:
        if not ordered:
            for path in self.files:
                yield from self._file_lines(path, keep, needles)
            return
        streams = [self._ordered(self._file_lines(p, keep, needles), key, i) for i, p in enumerate(self.files)]
        for item in heapq.merge(*streams):
            yield item[3]

    def lines(self, sections: Iterable[str] | str | None = None, *, ordered: bool = True) -> Iterator[Line]:
        """Iterate over every line, as dicts, in the order the run unfolded.

        Lines are keyed by when what they record was complete: an event's ``event_time``, a
        span's ``end_time``, a metric snapshot's ``time``.

        Args:
            sections: Only these sections (``"event"``, ``"span"``, ``"metric"``, ``"log"``).
            ordered: False yields file by file in file order, which is cheaper.

        Yields:
            One dict per decodable line.
        """
        if sections is None:
            return self._stream(None, _line_end_time, ordered)
        wanted = frozenset((sections,) if isinstance(sections, str) else sections)
        return self._stream(lambda d: d.get("section") in wanted, _line_end_time, ordered, _needles(wanted))

    def events(self, types: Iterable[str] | str | None = None, *, ordered: bool = True) -> Iterator[Line]:
        """Iterate over event lines in ``event_time`` order.

        Args:
            types: Only events of these types (e.g. ``{"TaskStarted", "ml.Checkpoint"}``).
            ordered: False yields file by file in file order, which is cheaper.

        Yields:
            One dict per event line.
        """
        if types is None:
            return self._stream(_is_event, _event_time, ordered, (b'"event"',))
        wanted = frozenset((types,) if isinstance(types, str) else types)

        def keep(d: Line) -> bool:
            return d.get("section") == "event" and d.get("type") in wanted

        return self._stream(keep, _event_time, ordered, _needles(wanted))

    def spans(self, kind: Iterable[str] | str | None = None, *, ordered: bool = True) -> Iterator[Line]:
        """Iterate over span lines in ``start_time`` order.

        Args:
            kind: Only spans of this kind or kinds (``session``, ``workflow``, ``block``,
                ``task``, ``user``).
            ordered: False yields file by file in file order (spans are written when they
                end), which is cheaper.

        Yields:
            One dict per span line.
        """
        needles = (b'"span"',)
        if kind is None:
            return self._stream(_is_span, _span_start, ordered, needles)
        kinds = frozenset((kind,) if isinstance(kind, str) else kind)

        def keep(d: Line) -> bool:
            return d.get("section") == "span" and d.get("kind") in kinds

        return self._stream(keep, _span_start, ordered, needles)

    def metrics(self, names: Iterable[str] | str | None = None, *, ordered: bool = True) -> Iterator[Line]:
        """Iterate over metric snapshot lines in ``time`` order.

        Args:
            names: Only metrics with these names (e.g. ``"otelflow.task.duration"``).
            ordered: False yields file by file in file order, which is cheaper.

        Yields:
            One dict per metric line (one metric with all its points).
        """
        needles = (b'"metric"',)
        if names is None:
            return self._stream(_is_metric, _metric_time, ordered, needles)
        wanted = frozenset((names,) if isinstance(names, str) else names)

        def keep(d: Line) -> bool:
            return d.get("section") == "metric" and d.get("name") in wanted

        return self._stream(keep, _metric_time, ordered, needles)

    def _scan(
        self,
        on_event: Callable[[EventLine], None],
        on_span: Callable[[SpanLine], None],
        sections: dict[str, int],
    ) -> None:
        """Decode every line of every file, in file order, into its typed view and hand
        events and spans to the callbacks; count lines per section into ``sections``.

        One loop with no generator in between: this is the hot path of reading a 10⁶-task
        run. A line that does not fit the typed views (a field of an unexpected type, an
        unknown section) is decoded generically and converted leniently. Torn and
        undecodable lines are skipped and counted as in :meth:`lines`.
        """
        from otelflow.analysis._lines import EventLine, MetricLine, SpanLine, decoder, lenient

        typed = decoder().decode
        generic = self._decoder.decode
        n_event = n_span = n_metric = n_other = 0

        def loose(obj: dict[str, Any]) -> None:
            """A line decoded as a plain dict (odd types, a TAL line): counted and converted leniently."""
            section = obj.get("section")
            key = section if isinstance(section, str) else "?"
            sections[key] = sections.get(key, 0) + 1
            if section == "event":
                on_event(lenient(obj, EventLine))
            elif section == "span":
                on_span(lenient(obj, SpanLine))

        bar = _progress_bar(self.files) if self.progress else None
        try:
            for path in self.files:
                if path in self.tal_files:  # RHAPSODY's format: translated line by line, then typed
                    for translated in self._file_lines(path, None):
                        loose(translated)
                    continue
                f = self._open(path)
                if f is None:
                    continue
                bad = lineno = 0
                pending = 0
                with f:
                    for raw in self._raw_lines(path, f) if _is_zst(path) else f:
                        lineno += 1
                        if bar is not None:
                            pending += len(raw)
                            if pending >= 1 << 22:
                                bar.update(pending)
                                pending = 0
                        try:
                            view = typed(raw)
                        except msgspec.ValidationError:
                            view = None  # well-formed JSON that does not fit: decoded generically below
                        except msgspec.DecodeError as exc:
                            if not raw.endswith(b"\n"):
                                break  # the torn last line of a killed process (see torn_lines)
                            if raw.isspace():
                                continue
                            bad += 1
                            self._note_bad(path, lineno, str(exc))
                            continue
                        if view is not None:
                            cls = view.__class__
                            if cls is EventLine:
                                n_event += 1
                                on_event(view)  # type: ignore[arg-type]
                            elif cls is SpanLine:
                                n_span += 1
                                on_span(view)  # type: ignore[arg-type]
                            elif cls is MetricLine:
                                n_metric += 1
                            else:
                                n_other += 1
                            continue
                        obj: object
                        try:
                            obj = generic(raw)
                        except msgspec.DecodeError:  # pragma: no cover - it parsed a moment ago
                            obj = None
                        if not isinstance(obj, dict):
                            if raw.endswith(b"\n"):
                                bad += 1
                                self._note_bad(path, lineno, "not a JSON object")
                            continue
                        why = safe_io.line_problem(obj)  # a field of the wrong type: skipped, counted
                        if why is not None:
                            bad += 1
                            self._note_bad(path, lineno, why)
                            continue
                        loose(obj)
                if bar is not None:
                    bar.update(pending)
                self._bad[path] = bad
        finally:
            if bar is not None:
                bar.close()
        for key, n in (("event", n_event), ("span", n_span), ("metric", n_metric), ("log", n_other)):
            if n:
                sections[key] = sections.get(key, 0) + n

    # -- tables -----------------------------------------------------------------------------

    @cached_property
    def data(self) -> RunData:
        """Tasks, workflows, blocks and counts of the run, from one pass over its lines.

        Computed on first access and cached; memory grows with the number of tasks. For a
        run still being written, open it again to see the lines written since.
        """
        from otelflow.analysis._tables import collect

        return collect(self)

    def tasks(self) -> dict[str, TaskInfo]:
        """Return every task of the run by task id (see :attr:`data`)."""
        return self.data.tasks

    def to_pandas(self) -> Frames:
        """The run's tables as pandas DataFrames (needs pandas).

        Returns:
            A :class:`~otelflow.analysis.frame.Frames` with ``tasks``, ``events``,
            ``resources`` and ``logs``, each built on first access.

        Raises:
            PandasDependencyError: pandas is not installed (the message says how to install it).
        """
        from otelflow.analysis.frame import Frames

        return Frames(self)


def _is_zst(path: Path) -> bool:
    return path.name.endswith(".zst")


def _run_files(path: Path) -> list[Path]:
    """A run directory's JSONL files, plain and zstd-compressed, sorted by name."""
    return sorted([*path.glob("*.jsonl"), *path.glob("*.jsonl.zst")])


def _need_zstd(path: Path) -> None:
    try:
        import zstandard  # noqa: F401 - fail here, with the install hint
    except ImportError as exc:
        raise OtelflowError(
            f"{path} is zstd-compressed and reading it needs the zstandard package: pip install 'otelflow[zstd]'."
        ) from exc


def _zst_lines(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[tuple[bytes, bool]]:
    """Lines of a file of concatenated zstd frames: ``(line, True)``, then at most one
    ``(partial, False)`` if the last frame is incomplete or damaged."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    fed = False  # the current frame has input
    rest = b""
    while True:
        data = f.read(chunk)
        if not data:
            break
        while data:
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError:
                yield rest, False
                return
            fed = True
            if out:
                lines = (rest + out).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    yield line + b"\n", True
            if dobj.eof:
                data = dobj.unused_data
                dobj = dctx.decompressobj()
                fed = False
            else:
                data = b""
    if fed or rest:
        yield rest, False


def _progress_bar(files: list[Path]) -> Any:
    """A tqdm bar over the files' bytes on stderr, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            pass  # it is skipped (and warned about) when read
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="reading run", leave=False)


def _needles(values: Iterable[str]) -> tuple[bytes, ...]:
    """The quoted JSON forms of ``values``, for the cheap pre-filter of ``_file_lines``."""
    return tuple(msgspec.json.encode(v) for v in values)


def _int(v: Any) -> int:
    return v if isinstance(v, int) else 0


def _event_time(d: Line) -> int:
    return _int(d.get("event_time"))


def _span_start(d: Line) -> int:
    return _int(d.get("start_time"))


def _metric_time(d: Line) -> int:
    return _int(d.get("time"))


def _line_end_time(d: Line) -> int:
    return _int(d.get(_END_KEYS.get(d.get("section"), "time")))  # type: ignore[arg-type]


def _is_event(d: Line) -> bool:
    return d.get("section") == "event"


def _is_span(d: Line) -> bool:
    return d.get("section") == "span"


def _is_metric(d: Line) -> bool:
    return d.get("section") == "metric"
