"""The ``otelflow`` command line: thin subcommands over :mod:`otelflow.analysis`.

``otelflow report|compare|plot|replay|runs|logs`` read run directories, ``otelflow
serve`` serves a run's live view; ``otelflow demo``
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


def _pick_run(args: argparse.Namespace) -> Any:
    """Open the run named by RUN, --run-id or --latest (at most one of them)."""
    from otelflow.analysis.reader import open_run

    given = [x for x in (args.run, args.run_id) if x is not None]
    if len(given) > 1 or (given and args.latest):
        raise CliError("Name the run once: RUN, --run-id RUN or --latest.")
    if args.run_id is not None and ("/" in args.run_id or args.run_id in (".", "..")):
        raise CliError(f"--run-id takes a run id (or unique prefix), not a path: {args.run_id!r}; pass a path as RUN.")
    run = open_run(args.run if args.run is not None else args.run_id, runs_dir=args.runs_dir)
    run.progress = _progress_wanted()
    return run


def _progress_wanted() -> bool:
    """A progress bar only for a person watching: stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _output_format(args: argparse.Namespace) -> str:
    if args.json and args.format not in (None, "json"):
        raise CliError("--json is --format json; drop one of them.")
    return "json" if args.json else (args.format or "text")


def _emit(text: str, output: str | None, what: str) -> None:
    """Write ``text`` to stdout, or to ``output`` (then say so on stderr)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"Wrote {what} to {output}.", file=sys.stderr)


def _cmd_report(args: argparse.Namespace) -> int:
    from otelflow.analysis.report import build_report, format_report

    fmt = _output_format(args)
    run = _pick_run(args)
    report = build_report(run, top=args.top)
    _emit(_dumps(report) + "\n" if fmt == "json" else format_report(report), args.output, "the report")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from otelflow.analysis.compare import compare_runs, format_comparison
    from otelflow.analysis.reader import open_run
    from otelflow.analysis.regress import slower

    fmt = _output_format(args)
    if args.fail_if_slower is not None and args.fail_if_slower < 0:
        raise CliError(f"--fail-if-slower takes a percentage ≥ 0, not {args.fail_if_slower:g}.")
    a = open_run(args.run_a, runs_dir=args.runs_dir)
    b = open_run(args.run_b, runs_dir=args.runs_dir)
    a.progress = b.progress = _progress_wanted()
    cmp = compare_runs(a, b)
    worse = slower(cmp, args.fail_if_slower) if args.fail_if_slower is not None else []
    if args.fail_if_slower is not None:
        cmp["fail_if_slower"] = {"pct": args.fail_if_slower, "slower": [w.to_dict() for w in worse]}
    _emit(_dumps(cmp) + "\n" if fmt == "json" else format_comparison(cmp), args.output, "the comparison")
    if worse:
        limit = f"{args.fail_if_slower:g}%"
        print(f"{PROG}: {len(worse)} measure(s) of B are more than {limit} slower than A:", file=sys.stderr)
        for w in worse:
            print(f"  {w}", file=sys.stderr)
        return 1
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from otelflow.analysis.safe_io import safe_file_stem

    run = _pick_run(args)
    if args.kind == "dashboard":
        from otelflow.analysis.dashboard import plot_dashboard

        # run_id comes from run.json: a crafted one must not name a path outside the cwd.
        path = plot_dashboard(run, args.output or f"{safe_file_stem(run.run_id)}-dashboard.png")
    else:
        from otelflow.analysis.plots import plot_run

        path = plot_run(run, args.output or f"{safe_file_stem(run.run_id)}-timeline.png", by=args.by, kind=args.kind)
    print(f"Wrote {path} ({len(run.tasks())} tasks of run {run.run_id}).")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    run = _pick_run(args)
    fmt = args.format
    if fmt == "html":
        from otelflow.analysis.export_html import write_html

        if args.table:
            raise CliError("--table is for --format csv or parquet.")
        c = write_html(run, args.output, by=args.by, max_bars=args.max_bars)
        shown = f"{c['bars']} of {c['tasks']} tasks as bars" if c["bars"] < c["tasks"] else f"{c['tasks']} tasks"
        print(f"Wrote {args.output} ({shown}, {c['lanes']} lanes, run {run.run_id}).")
    elif fmt == "chrome":
        from otelflow.analysis.export_chrome import write_chrome_trace

        if args.table:
            raise CliError("--table is for --format csv or parquet.")
        c = write_chrome_trace(run, args.output)
        print(
            f"Wrote {args.output} ({c['slices']} task slices on {c['tracks']} worker tracks, {c['flows']} dependency "
            f"flows, run {run.run_id}); open it in https://ui.perfetto.dev or chrome://tracing."
        )
    else:
        from otelflow.analysis.tables_export import TABLES, write_csv, write_parquet

        tables = list(TABLES) if args.table == "all" else [args.table or "tasks"]
        write = write_csv if fmt == "csv" else write_parquet
        paths = write(run, args.output, tables)
        print(f"Wrote {', '.join(str(p) for p in paths)} (run {run.run_id}).")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from otelflow.analysis.history import format_history, history

    fmt = _output_format(args)
    h = history(args.runs_dir, name=args.name, threshold_pct=args.threshold)
    _emit(_dumps(h) + "\n" if fmt == "json" else format_history(h), args.output, "the history")
    return 0


def _cmd_advise(args: argparse.Namespace) -> int:
    from otelflow.analysis.advise import advise, format_advice

    fmt = _output_format(args)
    if args.headroom < 0:
        raise CliError(f"--headroom takes a percentage ≥ 0, not {args.headroom:g}.")
    a = advise(args.runs_dir, task=args.task, headroom=args.headroom / 100)
    _emit(_dumps(a) + "\n" if fmt == "json" else format_advice(a), args.output, "the advice")
    advised = [v for v in a["tasks"].values() if "refused" not in v]
    return 0 if advised else 1


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
        meta_summary = r.meta.get("summary")
        summary: dict[str, Any] = meta_summary if isinstance(meta_summary, dict) else {}
        meta_tasks = summary.get("tasks")
        tasks: dict[str, Any] = meta_tasks if isinstance(meta_tasks, dict) else {}
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


def _cmd_logs(args: argparse.Namespace) -> int:
    from otelflow.analysis.logs import LogQuery, explain_empty, format_log, read_logs
    from otelflow.analysis.reader import open_run

    query = LogQuery(
        task=args.task,
        workflow=args.workflow,
        level=args.level,
        logger=args.logger,
        grep=args.grep,
        where=LogQuery.parse_where(args.where or ()),
    )
    run = open_run(args.run, runs_dir=args.runs_dir)
    n = 0
    for rec in read_logs(run, query):
        n += 1
        if args.json:
            rec.pop("section", None)
            sys.stdout.write(json.dumps(rec, default=str) + "\n")
        else:
            sys.stdout.write(format_log(rec) + "\n")
    if n == 0:
        why = explain_empty(run, query)
        if why is not None:
            raise CliError(why)
        if not args.json:
            print(f"No log records in run {run.run_id} match.", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from otelflow.live.server import serve_path

    return serve_path(args.run, runs_dir=args.runs_dir, host=args.host, port=args.port)


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
    p.add_argument("--run-id", metavar="RUN", help="the run with this id (or unique id prefix) in the runs directory")
    p.add_argument("--latest", action="store_true", help="the latest run in the runs directory (the default)")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--format", choices=("text", "json"), help="text for people (default) or JSON for machines")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--top", type=int, default=10, metavar="N", help="list the N slowest tasks (default 10)")

    p = add("compare", "Compare run B against run A (deltas are B − A).", _cmd_compare)
    p.add_argument("run_a", metavar="RUN_A", help="the baseline run (" + _RUN_HELP.split(";", maxsplit=1)[0] + ")")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--format", choices=("text", "json"), help="text for people (default) or JSON for machines")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("-o", "--output", metavar="FILE", help="write the comparison to FILE instead of stdout")
    p.add_argument(
        "--fail-if-slower",
        type=float,
        metavar="PCT",
        help="exit with status 1, naming each measure, when B's wall time, critical path or a task "
        "name's mean execution is more than PCT percent slower than A's (baselines under 1 ms are not judged)",
    )

    p = add(
        "plot", "Draw a run's dashboard (or its task timeline and concurrency) to a PNG (needs matplotlib).", _cmd_plot
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument("--run-id", metavar="RUN", help="the run with this id (or unique id prefix) in the runs directory")
    p.add_argument("--latest", action="store_true", help="the latest run in the runs directory (the default)")
    p.add_argument(
        "-o", "--out", "--output", dest="output", metavar="PNG", help="the file to write (default: RUN_ID-KIND.png)"
    )
    p.add_argument(
        "--kind",
        choices=("dashboard", "timeline", "concurrency", "both"),
        default="dashboard",
        help="dashboard: workflow Gantt, per-stage execution, concurrency, throughput, latency, stage × time "
        "heatmap, resources (default); timeline, concurrency or both: the per-worker task timeline plots",
    )
    p.add_argument(
        "--by", choices=("worker", "workflow"), default="worker", help="timeline lanes (default worker; not dashboard)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)

    p = add(
        "export",
        "Write a run as an HTML Gantt, a Chrome/Perfetto trace, or CSV/Parquet tables.",
        _cmd_export,
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument("--run-id", metavar="RUN", help="the run with this id (or unique id prefix) in the runs directory")
    p.add_argument("--latest", action="store_true", help="the latest run in the runs directory (the default)")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)
    p.add_argument(
        "--format",
        required=True,
        choices=("html", "chrome", "csv", "parquet"),
        help="html: a self-contained Gantt page; chrome: trace-event JSON for Perfetto/chrome://tracing; "
        "csv, parquet: tables (parquet needs pyarrow: pip install 'otelflow[parquet]')",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the file to write (a directory with --table all)"
    )
    p.add_argument(
        "--table",
        choices=("tasks", "events", "resources", "logs", "all"),
        help="csv/parquet: which table (default tasks); all writes tasks, events, resources and logs into "
        "the directory --output",
    )
    p.add_argument("--by", choices=("worker", "workflow"), default="worker", help="html: lanes (default worker)")
    p.add_argument(
        "--max-bars",
        type=int,
        default=20_000,
        metavar="N",
        help="html: at most N task bars, the longest; the rest show as density strips (default 20000)",
    )

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

    p = add("history", "Runs over time with duration, tasks and failures; flags regressions.", _cmd_history)
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--name", metavar="WORKFLOW", help="only this workflow (its mean duration and its tasks per run)")
    p.add_argument(
        "--threshold",
        type=float,
        default=20.0,
        metavar="PCT",
        help="a run regressed when its duration exceeds the median of the earlier runs' by more than PCT (default 20)",
    )
    p.add_argument("--format", choices=("text", "json"), help="text for people (default) or JSON for machines")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = add(
        "advise",
        "Recommend CPU and memory requests per task name from the history of runs (exit 1 if none can be made).",
        _cmd_advise,
    )
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--task", metavar="NAME", help="only this task name")
    p.add_argument(
        "--headroom", type=float, default=20.0, metavar="PCT", help="added to p95 CPU and peak memory (default 20)"
    )
    p.add_argument("--format", choices=("text", "json"), help="text for people (default) or JSON for machines")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = add("runs", "List the runs in a runs directory, oldest first.", _cmd_runs)
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help=_RUNS_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = add("logs", "Print a run's captured log records, from every process, in time order.", _cmd_logs)
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP)
    p.add_argument("--task", metavar="ID", help="only records of this task")
    p.add_argument("--workflow", metavar="ID", help="only records inside this workflow (id or name)")
    p.add_argument("--level", metavar="L", help="only records at this level or above (DEBUG … CRITICAL)")
    p.add_argument("--logger", metavar="NAME", help="only records of this logger and its children")
    p.add_argument("--grep", metavar="TEXT", help="only records whose message contains TEXT (any case)")
    p.add_argument(
        "--where", action="append", metavar="KEY=VALUE", help="a record or extra field equals VALUE (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print JSON lines (for jq)")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)

    p = add("serve", "Serve the live view of a run (a page and an SSE /events stream).", _cmd_serve)
    p.add_argument("run", nargs="?", metavar="RUN_OR_RUNS_DIR", help=_RUN_HELP)
    p.add_argument("--port", type=int, default=8765, metavar="N", help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--runs-dir", metavar="DIR", help=_RUNS_DIR_HELP)

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
        The exit status: 0 on success, 1 when ``compare --fail-if-slower`` found a
        slowdown, 2 on any error (after one sentence on stderr).
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
