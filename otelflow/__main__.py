"""``python -m otelflow …``: the same as the ``otelflow`` command."""

from __future__ import annotations

from otelflow.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
