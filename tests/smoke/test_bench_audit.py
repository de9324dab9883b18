"""Smoke run of hack/bench_audit.py: its table complete, every figure a positive time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smoke.test_benchmarks import positive, run, script, table

pytestmark = pytest.mark.smoke


def test_bench_audit(tmp_path: Path) -> None:
    out = run(script("bench_audit.py", "--smoke"), tmp_path)
    rows = table(out)
    assert set(rows) == {
        "request path: record built and queued",
        "background writer, per record",
        "whole request, without audit log",
        "whole request, with audit log",
    }
    assert all(positive(row[c]) for row in rows.values() for c in ("median µs", "p99 µs"))
    assert "added at the median by the audit log" in out
