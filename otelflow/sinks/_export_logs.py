"""What otelflow logs about exports, and what it keeps the exporters from logging.

While one of otelflow's export threads runs an OTel exporter
(:class:`~otelflow.sinks.resilience.ExportGuard`), the exporter's own per-attempt warnings
and errors are diverted by :class:`_ExporterLogFilter` to the guard (as the failure's
detail) and re-logged at DEBUG on ``otelflow.export``; records from any other thread pass
untouched. In their place :class:`ExportHealth` logs **one** warning per session that names
the endpoint and the fix, shown on stderr even when the application configured no logging
(:func:`_warn_visibly`); a later recovery or relapse is logged at INFO.

:func:`install_log_filter` / :func:`uninstall_log_filter` attach and remove the filter
(counted, so that sessions may overlap). Everything here is thread-safe.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from otelflow._warn import warn_visibly

if TYPE_CHECKING:
    from otelflow.sinks.resilience import ExportGuard

_log = logging.getLogger("otelflow")

#: Longest exporter detail quoted in the warning.
_DETAIL_CHARS = 400
_RETRY_PLAN = re.compile(r",? retrying in [0-9.]+ ?s\b\.?")

# Loggers of the OTel exporters whose per-attempt records otelflow replaces by its own
# single warning, while (and only while) one of otelflow's threads runs an export.
_SDK_LOGGER_PREFIXES = ("opentelemetry.exporter",)


# ---------------------------------------------------------------------------------------
# Keeping the exporters' own log records out of the user's logs
# ---------------------------------------------------------------------------------------


class _ThreadState(threading.local):
    guard: ExportGuard | None = None


_current = _ThreadState()


class _ExporterLogFilter(logging.Filter):
    """Diverts WARNING+ records of OTel exporter loggers emitted inside a guarded export.

    Records from any other thread (someone else's exporter in the same process) pass
    untouched. A diverted record is handed to the guard as the failure's detail and
    re-logged at DEBUG on ``otelflow.export``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        guard = _current.guard
        if guard is None or record.levelno < logging.WARNING:
            return True
        guard.exporter_reported(record)
        return False


_FILTER = _ExporterLogFilter()
_filter_lock = threading.Lock()
_filter_users = 0
_filtered: list[logging.Logger] = []
_debug_log = logging.getLogger("otelflow.export")


def install_log_filter(modules: Sequence[str] = ()) -> None:
    """Attach the filter to every exporter logger that exists now (idempotent, counted).

    Call after the exporters are constructed (their modules create their loggers on
    import). ``modules`` adds the exporters' own module names. Undo with
    :func:`uninstall_log_filter`.
    """
    global _filter_users
    with _filter_lock:
        _filter_users += 1
        names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(_SDK_LOGGER_PREFIXES)]
        for name in [*names, *modules]:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                # First in line: the SDK's own DuplicateFilter, on the same loggers, would
                # otherwise hide the metrics exporter's record right after the traces one.
                logger.filters.insert(0, _FILTER)
                _filtered.append(logger)


def uninstall_log_filter() -> None:
    """Remove the filter once the last session that installed it is gone."""
    global _filter_users
    with _filter_lock:
        _filter_users = max(0, _filter_users - 1)
        if _filter_users:
            return
        for logger in _filtered:
            logger.removeFilter(_FILTER)
        _filtered.clear()


# ---------------------------------------------------------------------------------------
# One warning per session
# ---------------------------------------------------------------------------------------


def _warn_visibly(msg: str, *args: object) -> None:
    """``_log.warning``, shown on stderr even when the application configured no logging.

    The OTel exporters' own messages, which this module silences, would have reached
    stderr through Python's last-resort handler; so does this one (see :mod:`otelflow._warn`).
    """
    warn_visibly(_log, msg, *args)


class ExportHealth:
    """Logs the one warning of a session about unreachable collectors, and one per signal
    an endpoint does not accept. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.warned = False
        self._guards: list[ExportGuard] = []

    def register(self, guard: ExportGuard) -> None:
        """Know ``guard`` (one per signal), so a warning can name every signal affected."""
        with self._lock:
            self._guards.append(guard)

    def _signals_at(self, guard: ExportGuard) -> str:
        """``traces and metrics``: the signals sent to ``guard``'s host and port, which an
        unreachable collector affects alike."""
        with self._lock:
            guards = list(self._guards)
        where = guard.address or guard.endpoint
        names = [g.signal for g in guards if (g.address or g.endpoint) == where and g.rejected is None]
        if guard.signal not in names:
            names.append(guard.signal)
        return " and ".join(dict.fromkeys(names))

    def rejected(self, guard: ExportGuard, reason: str) -> None:
        """``guard``'s endpoint answered that it does not take this signal at all."""
        signal = guard.signal
        other = "traces" if signal == "metrics" else "metrics"
        hint = ""
        if guard.protocol != "grpc" and reason.startswith("HTTP") and not _has_path(guard.endpoint):
            hint = (
                f" The URL has no path: OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT is used as is, "
                f"so it needs the full path (e.g. {guard.endpoint.rstrip('/')}/v1/{signal}); "
                f"OTEL_EXPORTER_OTLP_ENDPOINT adds /v1/{signal} itself."
            )
        _warn_visibly(
            "otelflow: the OTLP endpoint %s does not accept %s (%s; a traces-only backend such as "
            "Jaeger, Tempo or Phoenix answers so). otelflow stops exporting %s for this run; %s "
            "and the run directory are not affected, and what is not sent is counted in "
            "summary()['dropped']['export_failures_%s'].%s Fix: set OTEL_%s_EXPORTER=none, or "
            "point OTEL_EXPORTER_OTLP_%s_ENDPOINT at a backend that takes %s.",
            guard.endpoint,
            signal,
            reason,
            signal,
            other,
            signal,
            hint,
            signal.upper(),
            signal.upper(),
            signal,
        )

    def down(self, guard: ExportGuard, detail: str, retry_s: tuple[float, float] = (5.0, 60.0)) -> None:
        """``guard``'s collector just failed an export (it was fine, or unknown, before).

        ``retry_s`` is the breaker's (first, longest) wait between probes, for the warning.
        """
        with self._lock:
            first = not self.warned
            self.warned = True
        first_cooldown_s, max_cooldown_s = retry_s

        sig = guard.signal.upper()
        if first:
            signals = self._signals_at(guard)
            _warn_visibly(
                "otelflow could not export %s to %s (OTLP %s): %s. Is an OpenTelemetry "
                "Collector listening there? The workflow and the run directory are not "
                "affected: while the collector is down otelflow sends nothing to it instead of "
                "retrying (it tries again every %g-%g s) and counts what it could not export "
                "in summary()['dropped']['export_failures']. Point OTEL_EXPORTER_OTLP_ENDPOINT "
                "(or OTEL_EXPORTER_OTLP_%s_ENDPOINT) at your collector, or set "
                "%s to export nothing. This warning is shown once.",
                signals,
                guard.endpoint,
                guard.protocol,
                detail,
                first_cooldown_s,
                max_cooldown_s,
                sig,
                " and ".join(f"OTEL_{name.upper()}_EXPORTER=none" for name in signals.split(" and ")),
            )
        else:
            _log.info("otelflow could not export %s to %s: %s", guard.signal, guard.endpoint, detail)

    def up(self, guard: ExportGuard) -> None:
        """``guard``'s collector answered again after being down."""
        _log.info("otelflow: the collector at %s takes %s again.", guard.endpoint, guard.signal)


def _has_path(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).path not in ("", "/")


def _short(message: str) -> str:
    # The exporter's own words, minus its retry plan (otelflow has its own).
    text = _RETRY_PLAN.sub(".", " ".join(message.split())).rstrip(". ")
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


__all__ = ["ExportHealth", "install_log_filter", "uninstall_log_filter"]
