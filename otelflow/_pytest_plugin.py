"""The pytest plugin otelflow registers: the ``otelflow_capture`` fixture, imported lazily.

Installing otelflow adds this plugin to every pytest run on the machine, so it must cost
nothing there: it imports neither the OTel SDK nor the rest of otelflow until a test asks
for the fixture (``import otelflow`` itself is lazy, see ``otelflow/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from otelflow.testing import Captured


@pytest.fixture
def otelflow_capture(tmp_path: Path) -> Iterator[Captured]:
    """A :func:`otelflow.testing.capture` around the test; assert after ``otelflow_capture.flush()``."""
    from otelflow.testing import capture

    with capture(tmp_path) as cap:
        yield cap
