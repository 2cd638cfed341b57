"""Warnings that reach the user even when the application configured no ``logging``.

otelflow's logger carries a ``NullHandler`` (the library convention), which also keeps
Python's last-resort stderr handler away: a full disk or a rejected value would then be
reported nowhere. :func:`warn_visibly` logs normally when a real handler will take the
record, and otherwise hands it to ``logging.lastResort`` (stderr) itself.
"""

from __future__ import annotations

import logging

__all__ = ["has_handler", "warn_visibly"]


def has_handler(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` reaches a handler other than a ``NullHandler``."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def warn_visibly(logger: logging.Logger, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
    """``logger.warning(msg, *args)``, shown on stderr when no logging is configured.

    Respects the level: with otelflow's warnings switched off, nothing is shown.
    """
    if not logger.isEnabledFor(logging.WARNING):
        return
    if has_handler(logger) or logging.lastResort is None:
        logger.warning(msg, *args, exc_info=exc_info)
        return
    info = (type(exc_info), exc_info, exc_info.__traceback__) if exc_info is not None else None
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, msg, args, info)
    logging.lastResort.handle(record)
