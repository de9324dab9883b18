"""Smoke runs of the benchmarks the README documents: each script or make target in its smoke
mode, run as a user runs it, checked for a complete table of sane values (rates above zero,
no failed request). The figures themselves are not tested: they belong to a quiet machine.

    pytest -m smoke
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.kube_fixtures import control_plane
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.smoke
REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], tmp_path: Path, timeout_s: float = 300, **extra_env: str) -> str:
    """Its stdout then its stderr, once it succeeded."""
    # What the e2e fixtures set for this process is not the user's environment.
    env = {
        k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("LLMROUTER_")
    }
    if "LLMROUTER_CACHE" in os.environ:
        env["LLMROUTER_CACHE"] = os.environ["LLMROUTER_CACHE"]
    env["TMPDIR"] = str(tmp_path)
    env.update(extra_env)
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"{cmd}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def bench(cmd: list[str], tmp_path: Path) -> str:
    """A benchmark's output, checked for the folder of its processes' logs (in tmp_path)."""
    out = run(cmd, tmp_path)
    logs = re.search(r"^logs of each process: (.+)$", out, re.MULTILINE)
    assert logs, out
    assert Path(logs.group(1)).parent == tmp_path
    return out


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "hack" / name), *args]


def table(out: str) -> dict[str, dict[str, str]]:
    """The markdown table in ``out``: row name → column → cell."""
    lines = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0]]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def positive(cell: str) -> bool:
    """Every number in the cell is above zero."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", cell)]
    return bool(numbers) and all(n > 0 for n in numbers)


@pytest.fixture(scope="module")
def bench_tools() -> None:
    """nginx, wrk and vegeta, as `make bench SMOKE=1` installs them (once; then a check)."""
    subprocess.run([str(REPO / "hack" / "bench-tools.sh"), "--smoke"], check=True, timeout=600)


@pytest.mark.parametrize("state", [[], ["--redis"]], ids=["memory", "redis"])
def test_bench_gateway(tmp_path: Path, state: list[str]) -> None:
    out = bench(script("bench_gateway.py", "--smoke", *state), tmp_path)
    rows = table(out)
    assert set(rows) == {"upstream direct", "through llmrouter"}, out
    for row in rows.values():
        assert all(positive(row[c]) for c in ("p50 ms", "p99 ms", "requests/s")), out
    assert "gateway errors: 0" in out


def test_bench_balancing(tmp_path: Path) -> None:
    out = bench(script("bench_balancing.py", "--smoke"), tmp_path)
    rows = table(out)
    assert set(rows) == {"round-robin", "least-loaded"}, out
    for row in rows.values():
        assert all(positive(row[c]) for c in ("requests/s", "p50 ms", "p99 ms")), out


def test_make_bench(tmp_path: Path, bench_tools: None) -> None:
    out = bench(["make", "--no-print-directory", "bench", "SMOKE=1"], tmp_path)
    rows = table(out)
    cores = os.cpu_count()
    assert list(rows) == [
        "upstream (nginx)",
        "aiohttp pass-through (uvloop)",
        "llmrouter (memory)",
        "llmrouter (redis)",
        f"llmrouter (redis, {cores} workers)",
    ], out
    for name, row in rows.items():
        assert positive(row["max req/s"]) and positive(row["RSS MiB"]), out
        if name != "upstream (nginx)":
            for column in ("p50 / p99 ms at 50% of own max", "p50 / p99 ms at 80%"):
                assert positive(row[column]), (name, column, out)
    assert "failures: none" in out
    # The gateways' logs went to their files, not around the table.
    assert "Traceback" not in out and "ERROR" not in out


def test_bench_compare_soak(tmp_path: Path, bench_tools: None) -> None:
    out = bench(
        script("bench_compare.py", "--smoke", "--soak-minutes", "0.05", "--soak-system", "redis"),
        tmp_path,
    )
    summary = re.search(
        r"soak of llmrouter \(redis\): .* at (\d+) req/s .* RSS after warm-up ([\d.]+) MiB, "
        r"at the end ([\d.]+) MiB .* failed requests: (\d+)",
        out,
    )
    assert summary, out
    rate, warm, last, failed = summary.groups()
    assert positive(rate) and positive(warm) and positive(last), out
    assert failed == "0", out


@pytest.mark.e2e
def test_bench_operator(tmp_path: Path, control_plane: ControlPlane) -> None:
    out = bench(
        script("bench_operator.py", "--smoke", "--kubeconfig", str(control_plane.kubeconfig)),
        tmp_path,
    )
    revocations = re.findall(
        r"^key revocation .*trials: p50 ([\d.]+) s, p95 ([\d.]+) s, max ([\d.]+) s$",
        out,
        re.MULTILINE,
    )
    assert len(revocations) == 2, out
    assert all(positive(" ".join(figures)) for figures in revocations), out
    converged = re.search(
        r"^20 Tenants applied in ([\d.]+) s; last key Secret after ([\d.]+) s; "
        r"last key usable at the gateway after ([\d.]+) s$",
        out,
        re.MULTILINE,
    )
    assert converged and positive(" ".join(converged.groups()[1:])), out
