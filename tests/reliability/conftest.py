"""Fixtures for the reliability tests: a child process running a workflow, a tiny disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout first on the path, no OTel vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def write_script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"child_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(body))
    return path


def run_child(
    script: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        cwd=script.parent,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (root only), unmounted afterwards."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=False, capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the filesystem of ``directory`` until at most ``leave`` bytes are free."""
    n = 0
    while True:
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        if free <= leave:
            return
        chunk = max(1, min(free - leave, 64 * 1024))
        try:
            with open(directory / f"filler{n}", "wb") as f:
                f.write(b"\0" * chunk)
        except OSError:
            return
        n += 1
