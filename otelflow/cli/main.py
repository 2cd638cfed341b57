"""The ``otelflow`` command line: thin subcommands over :mod:`otelflow.analysis`.

``otelflow report|compare|plot|replay|runs`` read run directories; ``otelflow demo``
forwards its arguments to :func:`otelflow.demo.main`. A failure prints one sentence on
stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from otelflow.errors import OtelflowError

__all__ = ["build_parser", "main"]

PROG = "otelflow"
_RUN_HELP = (
    "a run directory, a runs directory (its latest run), or a run id (or unique prefix) in "
    "the runs directory; default: the latest run"
)
_RUNS_DIR_HELP = "where run ids are looked up (default: $OTELFLOW_RUNS_DIR or ./.otelflow/runs)"


class CliError(OtelflowError):
    """A command-line usage problem found after parsing (exit status 2)."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("otelflow")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
        return "unknown"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


# --- subcommands ---------------------------------------------------------------------------


def _cmd_report(args: argparse.Namespace) -> int:
    from otelflow.analysis.reader import open_run
    from otelflow.analysis.report import build_report, format_report

    run = open_run(args.run, runs_dir=args.runs_dir)
    report = build_report(run, top=args.top)
    sys.stdout.write(_dumps(report) + "\n" if args.json else format_report(report))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from otelflow.analysis.compare import compare_runs, format_comparison
    from otelflow.analysis.reader import open_run

    a = open_run(args.run_a, runs_dir=args.runs_dir)
    b = open_run(args.run_b, runs_dir=args.runs_dir)
    cmp = compare_runs(a, b)
    sys.stdout.write(_dumps(cmp) + "\n" if args.json else format_comparison(cmp))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from otelflow.analysis.plots import plot_run
    from otelflow.analysis.reader import open_run

    run = open_run(args.run, runs_dir=args.runs_dir)
    from otelflow.analysis.safe_io import safe_file_stem

    # run_id comes from run.json: a crafted one must not name a path outside the cwd.
    output = args.output or f"{safe_file_stem(run.run_id)}-timeline.png"
    path = plot_run(run, output, by=args.by, kind=args.kind)
    print(f"Wrote {path} ({len(run.tasks())} tasks of run {run.run_id}).")
    return 0


def _parse_headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--header {item!r} is not KEY=VALUE.")
        headers[key.strip()] = value.strip()
    return headers


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Keep a library's log records off stderr (its handlers still see them)."""
    logger = logging.getLogger(name)
    propagate = logger.propagate
    logger.propagate = False
    null = logging.NullHandler()
    logger.addHandler(null)  # no handler at all would bring in logging.lastResort
    try:
        yield
    finally:
        logger.removeHandler(null)
        logger.propagate = propagate


def _cmd_replay(args: argparse.Namespace) -> int:
    from otelflow.analysis.reader import open_run
    from otelflow.analysis.replay import EXPORTER_LOGGER, replay

    headers = _parse_headers(args.header or ())
    run = open_run(args.run, runs_dir=args.runs_dir)
    if run.status == "running":
        print(f"{PROG}: note: run {run.run_id} is still running; replaying the spans written so far.", file=sys.stderr)
    # The exporters log each retry; the one error sentence below says what matters.
    with _quiet_logger(EXPORTER_LOGGER):
        result = replay(
            run,
            endpoint=args.endpoint,
            protocol=args.protocol,
            headers=headers or None,
            timeout=args.timeout,
            batch_size=args.batch_size,
        )
    where = result.endpoint or "the endpoint from the OTEL_EXPORTER_OTLP_* variables"
    skipped = f"; {result.skipped} span line(s) without valid ids skipped" if result.skipped else ""
    print(
        f"Sent {result.spans} spans of run {run.run_id} (trace {run.trace_id or '-'}) to {where} "
        f"over {result.protocol} in {result.batches} request(s){skipped}."
    )
    return 0


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _cmd_runs(args: argparse.Namespace) -> int:
    from otelflow.analysis.reader import default_runs_dir, list_runs
    from otelflow.analysis.report import format_duration

    runs_dir = args.runs_dir if args.runs_dir is not None else default_runs_dir()
    runs = list_runs(runs_dir)
    if args.json:
        rows = [
            {
                "run_id": r.run_id,
                "path": str(r.path),
                "start_time": r.start_time,
                "end_time": r.end_time,
                "status": r.status,
                "service_name": r.service_name,
                "tasks": (r.meta.get("summary") or {}).get("tasks")
                if isinstance(r.meta.get("summary"), dict)
                else None,
            }
            for r in runs
        ]
        print(_dumps(rows))
        return 0
    if not runs:
        print(f"No runs in {runs_dir}.")
        return 0
    table = [["RUN ID", "STARTED", "WALL", "STATUS", "TASKS", "FAILED", "SERVICE"]]
    for r in runs:
        summary = r.meta.get("summary") if isinstance(r.meta.get("summary"), dict) else {}
        tasks = summary.get("tasks") if isinstance(summary.get("tasks"), dict) else {}
        wall = (r.end_time - r.start_time) / 1e9 if r.end_time is not None else None
        table.append(
            [
                r.run_id,
                _time(r.start_time),
                format_duration(wall),
                r.status,
                str(tasks.get("created", "-")),
                str(tasks.get("failed", "-")),
                r.service_name or "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    print(f"{len(runs)} run(s) in {runs_dir}")
    return 0


def _cmd_demo(argv: Sequence[str]) -> int:
    try:
        from otelflow.demo import main as demo_main
    except ModuleNotFoundError as exc:
        if exc.name in ("otelflow.demo", "otelflow"):
            raise CliError("The demo is not available in this installation of otelflow.") from exc
        raise CliError(f"The demo needs the package {exc.name!r}, which is not installed.") from exc
    return int(demo_main(list(argv)) or 0)


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the ``otelflow`` argument parser (every subcommand but ``demo``'s own options)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at otelflow runs: reports, comparisons, plots, and replay to OTLP.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("report", "Summarize a run: counts, timings, workflows, failures, critical path.", _cmd_report)
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--top", type=int, default=10, metavar="N", help="list the N slowest tasks (default 10)")

    p = add("compare", "Compare run B against run A (deltas are B − A).", _cmd_compare)
    p.add_argument("run_a", metavar="RUN_A", help="the baseline run (" + _RUN_HELP.split(";", maxsplit=1)[0] + ")")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")

    p = add("plot", "Draw a run's task timeline and concurrency to a PNG (needs matplotlib).", _cmd_plot)
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument("-o", "--output", metavar="PNG", help="the file to write (default: RUN_ID-timeline.png)")
    p.add_argument("--by", choices=("worker", "workflow"), default="worker", help="timeline lanes (default worker)")
    p.add_argument(
        "--kind", choices=("timeline", "concurrency", "both"), default="both", help="what to draw (default both)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)

    p = add("replay", "Send a recorded run's spans, with their original ids, to an OTLP endpoint.", _cmd_replay)
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="e.g. http://localhost:4318 (http/protobuf) or http://localhost:4317 (grpc); "
        "default: the OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables",
    )
    p.add_argument(
        "--protocol",
        choices=("grpc", "http/protobuf"),
        help="default: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else http/protobuf",
    )
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="an extra request header (repeatable)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per request (default 10)")
    p.add_argument("--batch-size", type=int, default=512, metavar="N", help="spans per request (default 512)")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)

    p = add("runs", "List the runs in a runs directory, oldest first.", _cmd_runs)
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    sub.add_parser(
        "demo",
        help="Run the otelflow demo workflow (its options: otelflow demo --help).",
        add_help=False,
    )
    return parser


def _error(message: str) -> int:
    message = message.strip() or "failed."
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}."
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``otelflow`` command line.

    Args:
        argv: The arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 on any error (after one sentence on stderr).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "demo":
            return _cmd_demo(args_list[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help, --version, or a usage error already printed
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args))
    except BrokenPipeError:  # `otelflow report | head`
        return 0
    except (OtelflowError, ValueError) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(_os_error(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a malformed run must not print a traceback
        return _error(f"could not read the run ({type(exc).__name__}: {exc}); it may hold lines otelflow did not write")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
