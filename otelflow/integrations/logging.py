"""Former home of the ``logging`` bridge; it now lives in :mod:`otelflow.logs`.

``start_telemetry(capture_logs=True)`` (``OTELFLOW_CAPTURE_LOGS=1``) captures the root
logger, ``OTELFLOW_CAPTURE_LOGGERS`` / :func:`otelflow.capture_logging` named loggers.
"""

from __future__ import annotations

from otelflow.logs.capture import CaptureHandler as LogBridgeHandler

__all__ = ["LogBridgeHandler"]
