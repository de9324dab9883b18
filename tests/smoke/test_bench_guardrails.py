"""Smoke run of hack/bench_guardrails.py: its table complete, every figure a positive time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smoke.test_benchmarks import positive, run, script, table

pytestmark = pytest.mark.smoke


def test_bench_guardrails(tmp_path: Path) -> None:
    out = run(script("bench_guardrails.py", "--smoke", "--token-gap-ms", "5"), tmp_path)
    rows = table(out)
    assert "input scan per KB, chat, 1 KB" in rows
    assert "stream guard per event" in rows
    assert "TTFT guarded, upstream 5 ms gap" in rows
    assert all(positive(row[c]) for row in rows.values() for c in ("median µs", "p99 µs"))
    assert "added TTFT at the median" in out
