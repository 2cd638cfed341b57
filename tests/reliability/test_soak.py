"""The soak benchmark at a reduced size (issue 18, part 3): resource polling at 0.1 s,
4 subscribers, no lost or duplicated records, otelflow's own metrics exported.
The full size (10⁶ tasks) is ``python bench/bench_soak.py``; figures in docs/reliability.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():  # bench/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "bench_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    return module


def test_a_reduced_soak_loses_and_duplicates_nothing(tmp_path):
    bench = _bench()
    figures = bench.check(bench.soak(20_000, threads=4, sample_s=0.2, runs_dir=tmp_path))
    assert figures["problems"] == []
    assert figures["tasks"] == 20_000
    assert figures["events"] == 20_000 * 4  # created, resolved, started, completed
    assert figures["rss_samples_mb"]
