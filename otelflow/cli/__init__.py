"""The ``otelflow`` command line (see :mod:`otelflow.cli.main` and ``docs/cli.md``)."""

from __future__ import annotations

from otelflow.cli.main import main

__all__ = ["main"]
