"""Logs as wide events: capture ``logging`` records into the run, read them back.

``otelflow.capture_logging("myapp", level="INFO")`` (or ``OTELFLOW_CAPTURE_LOGGERS``)
turns each record of those loggers into one ``log`` line of the run's JSONL — every
``extra`` field kept with its JSON type, plus the trace, span, task, workflow and block
ids of where it was logged. :class:`LogCapture` is the same configuration as a small
picklable value that engine integrations ``apply()`` in their worker processes.
See ``docs/logs.md``.
"""

from __future__ import annotations

from otelflow.logs.capture import AppliedCapture, CaptureHandler, LogCapture, capture_logging

__all__ = ["AppliedCapture", "CaptureHandler", "LogCapture", "capture_logging"]
