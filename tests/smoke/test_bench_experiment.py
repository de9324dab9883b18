"""Smoke run of hack/bench_experiment.py: its table complete, every figure a positive time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smoke.test_benchmarks import positive, run, script, table

pytestmark = pytest.mark.smoke


def test_bench_experiment(tmp_path: Path) -> None:
    out = run(script("bench_experiment.py", "--smoke"), tmp_path)
    rows = table(out)
    assert set(rows) == {
        "assignment work per request",
        "whole request, without experiment",
        "whole request, with experiment",
    }
    assert all(positive(row[c]) for row in rows.values() for c in ("median µs", "p99 µs"))
    assert "added at the median by an active experiment" in out
