"""Smoke runs of hack/bench_cpu.py: its table complete, CPU per request above zero, with and
without the tenant's budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smoke.test_benchmarks import bench, positive, script, table

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("budget", [[], ["--no-budget"]])
def test_bench_cpu(tmp_path: Path, budget: list[str]) -> None:
    out = bench(script("bench_cpu.py", "--smoke", *budget), tmp_path)
    rows = table(out)
    assert set(rows) == {"gateway", "redis"}
    assert all(positive(row["CPU µs per request"]) for row in rows.values())
    assert "failed: 0" in out
