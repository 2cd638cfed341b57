"""``run.json``: what a run directory says about its run (ids, times, host, versions, config).

Written by the main process only, atomically (a temporary file renamed over the old one), at
start (status ``running``) and at stop (``completed``, with the final summary). Worker
processes never write it. Secrets in the configuration are redacted before it is written.
"""

from __future__ import annotations

import logging
import os
import platform
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from otelflow._version import __version__

__all__ = ["new_run_id", "versions", "write_run_json"]

_log = logging.getLogger("otelflow")


def new_run_id() -> str:
    """A fresh run id: UTC start time and a random suffix, e.g. ``20261201T162929Z-4e2198``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{random.getrandbits(24):06x}"


def versions() -> dict[str, str]:
    """Versions of otelflow, Python, the platform and the packages that shape a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"otelflow": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("opentelemetry-sdk", "prometheus-client", "psutil", "msgspec", "distributed"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def write_run_json(run_dir: Path, meta: dict[str, Any]) -> bool:
    """Write ``meta`` as ``run_dir/run.json`` atomically. False (logged) if it could not be written."""
    path = run_dir / "run.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(meta, enc_hook=repr), indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        _log.warning("otelflow could not write %s: %s", path, exc)
        return False
    return True
