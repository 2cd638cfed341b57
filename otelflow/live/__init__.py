"""The live view: watch a run while it runs, in a browser or in your own web app.

``start_telemetry(live_port=8765)`` (``OTELFLOW_LIVE_PORT``) serves this process's run;
``otelflow serve RUN_OR_RUNS_DIR`` serves a run directory written by another process (or
replays a finished one). Both serve a small page at ``/`` and a Server-Sent Events stream
at ``/events`` with ``Last-Event-ID`` resume. To feed the stream into your own app,
:func:`attach` a hub to a telemetry and stream ``hub.sse(last_event_id)``. See docs/live.md.
"""

from __future__ import annotations

from otelflow.live.hub import EventHub
from otelflow.live.server import LiveServer
from otelflow.live.sources import RunFollower, attach

__all__ = ["EventHub", "LiveServer", "RunFollower", "attach"]
