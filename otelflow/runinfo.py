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
from otelflow._warn import warn_visibly

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
    """Write ``meta`` as ``run_dir/run.json`` atomically. False (warned visibly) if it could not be.

    On a full disk, where no new file can be made, the old ``run.json`` is rewritten in place,
    compact and without the summary: its blocks are reused, so the status still gets there.
    No ``run.tmp<pid>`` is ever left behind.
    """
    path = run_dir / "run.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = msgspec.json.encode(meta, enc_hook=repr)
    try:
        tmp.write_bytes(msgspec.json.format(data, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if not _overwrite(path, _compact(meta)):
            warn_visibly(_log, "otelflow could not write %s: %s", path, exc)
            return False
    return True


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _compact(meta: dict[str, Any]) -> bytes:
    small = {k: v for k, v in meta.items() if k not in ("summary", "versions", "config")}
    return msgspec.json.encode(small, enc_hook=repr)


def _overwrite(path: Path, data: bytes) -> bool:
    """Rewrite ``path`` in place (not atomically): the fallback when a new file cannot be made."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.ftruncate(fd, 0)
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
