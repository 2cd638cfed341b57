"""Opt-in: finalize the run when the process is told to terminate (SIGTERM, SIGHUP).

By default otelflow installs no signal handler (it is a visitor in someone else's
process): a ``SIGTERM`` with Python's default action ends the process at once, without
``atexit``, and the run reads as "ended without stop() (killed?)" — everything flushed
until then (all but the last ~0.5 s) is on disk. With ``start_telemetry(handle_signals=
True)`` or ``OTELFLOW_HANDLE_SIGNALS=1`` a handler first stops the telemetry (every
accepted event drained, ``run.json`` says "completed"), then hands the signal on to the
handler that was there before — a callable is called, the default action is taken (the
process ends with that signal), an ignored signal stays ignored. It never swallows it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from otelflow._warn import warn_visibly

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["SIGNALS", "SignalFinalizer"]

_log = logging.getLogger("otelflow")

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals handled: those whose default action ends the process without ``atexit``.
(``SIGINT`` raises ``KeyboardInterrupt``, which unwinds to ``atexit``: no handler needed.)"""

#: Seconds the handler gives ``stop()`` before handing the signal on regardless.
STOP_TIMEOUT_S = 10.0

_Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalFinalizer:
    """The installed handlers of one telemetry; :meth:`uninstall` puts the previous back."""

    def __init__(self, telemetry: Telemetry, signals: tuple[signal.Signals, ...] = SIGNALS) -> None:
        self._telemetry = telemetry
        self._signals = signals
        self._previous: dict[int, _Handler] = {}

    def install(self) -> bool:
        """Install the handlers (main thread only). Returns False, with a warning, elsewhere."""
        if threading.current_thread() is not threading.main_thread():
            warn_visibly(
                _log,
                "otelflow: handle_signals=True needs start_telemetry() in the main thread "
                "(Python allows signal handlers only there); no handler was installed."
            )
            return False
        for sig in self._signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return True

    def uninstall(self) -> None:
        """Restore the previous handlers where ours is still installed (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return  # the handler stays; with the telemetry stopped it only hands signals on
        for sig, prev in list(self._previous.items()):
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        prev = self._previous.get(signum, signal.SIG_DFL)
        tel = self._telemetry
        if tel.active:
            # stop() on a helper thread, bounded: the interrupted code may hold a lock
            # that stop() needs, and the signal must be handed on whatever happens.
            t = threading.Thread(target=_stop_quietly, args=(tel,), name="otelflow-signal-stop", daemon=True)
            t.start()
            t.join(STOP_TIMEOUT_S)
        self.uninstall()
        _chain(prev, signum, frame)


def _stop_quietly(tel: Telemetry) -> None:
    try:
        tel.stop(timeout=STOP_TIMEOUT_S / 2)
    except Exception as exc:  # noqa: BLE001 - the signal is handed on regardless
        warn_visibly(_log, "otelflow: stop() on a signal failed: %s: %s", type(exc).__name__, exc)


def _chain(prev: _Handler, signum: int, frame: FrameType | None) -> None:
    """Do what would have happened without otelflow's handler."""
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # SIG_DFL (or None: a handler not set from Python): the default action, for real —
    # the process ends with this signal as its status, as it would have.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
