"""Several gateway processes on one real Redis: shared limits, durable usage, outages."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.config import LOCAL_MODEL
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from tests.support.serve import ServeProcess, llmrouter

RESOURCES = (
    LOCAL_MODEL
    + """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: shared}
spec:
  models: [local]
  limits: {requestsPerMinute: 100}
  apiKeys: [{name: dev, role: developer}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: budgeted}
spec:
  models: [local]
  budget: {monthlyUSD: "0.0001"}
  apiKeys: [{name: dev, role: developer}]
"""
)
SHARED_KEY = "llmr_shared_dev_key_00000000001"
BUDGET_KEY = "llmr_budgeted_dev_key_000000001"
BODY = {"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
"""Costs 0.000034 USD (7 and 5 tokens at $2 and $4 per million); reserves 0.000062 (its
21-token input estimate and 5 output tokens)."""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "resources.yaml").write_text(RESOURCES)
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump({"shared": {"dev": SHARED_KEY}, "budgeted": {"dev": BUDGET_KEY}})
    )
    return tmp_path / "resources.yaml", keys


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.cleanup()


def gateway(
    files: tuple[Path, Path], upstream: FakeUpstream, state: str, log: Path, *extra: str
) -> ServeProcess:
    resources, keys = files
    return ServeProcess(
        [
            "-f",
            str(resources),
            "--keys-file",
            str(keys),
            "--endpoint",
            f"local={upstream.url}",
            "--state",
            state,
            *extra,
        ],
        log,
    )


def post(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def usage_total(url: str, key: str) -> dict[str, object]:
    resp = httpx.get(f"{url}/admin/usage", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    total: dict[str, object] = resp.json()["total"]
    return total


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def away_from_minute_boundary() -> None:
    """A requests-per-minute test must not straddle two calendar minutes."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def test_two_gateways_enforce_one_limit_together(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    with (
        gateway(files, upstream, redis_url, tmp_path / "a.log") as a,
        gateway(files, upstream, redis_url, tmp_path / "b.log") as b,
    ):
        away_from_minute_boundary()
        statuses = [post((a, b)[i % 2].url, SHARED_KEY).status_code for i in range(150)]
    assert statuses.count(200) == 100
    assert statuses.count(429) == 50
    assert len(upstream.seen) == 100


def test_usage_and_spend_survive_a_gateway_restart(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    with gateway(files, upstream, redis_url, tmp_path / "a.log") as a:
        assert [post(a.url, BUDGET_KEY).status_code for _ in range(2)] == [200, 200]
    with gateway(files, upstream, redis_url, tmp_path / "b.log") as b:
        assert usage_total(b.url, BUDGET_KEY) == {
            "requests": 2,
            "input_tokens": 14,
            "output_tokens": 10,
            "cost_usd": "0.000068",
        }
        refused = post(b.url, BUDGET_KEY)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"


def test_fail_open_keeps_serving_and_writes_usage_when_redis_returns(
    files: tuple[Path, Path],
    upstream: FakeUpstream,
    durable_redis: RedisServer,
    tmp_path: Path,
) -> None:
    with gateway(files, upstream, durable_redis.url, tmp_path / "a.log") as gw:
        assert [post(gw.url, SHARED_KEY).status_code for _ in range(2)] == [200, 200]
        durable_redis.stop()
        assert [post(gw.url, SHARED_KEY).status_code for _ in range(3)] == [200, 200, 200]
        assert metric(gw.metrics_url, "llmrouter_state_available") == 0
        assert metric(gw.metrics_url, "llmrouter_state_pending_settlements") == 3
        durable_redis.start()
        wait_until(
            lambda: metric(gw.metrics_url, "llmrouter_state_available") == 1,
            15,
            "the gateway to see Redis again",
        )
        assert metric(gw.metrics_url, "llmrouter_state_pending_settlements") == 0
        assert usage_total(gw.url, SHARED_KEY)["requests"] == 5
        assert post(gw.url, SHARED_KEY).status_code == 200
        assert usage_total(gw.url, SHARED_KEY)["requests"] == 6


def test_fail_closed_refuses_during_the_outage_and_recovers(
    files: tuple[Path, Path],
    upstream: FakeUpstream,
    durable_redis: RedisServer,
    tmp_path: Path,
) -> None:
    with gateway(
        files,
        upstream,
        durable_redis.url,
        tmp_path / "a.log",
        "--redis-failure-policy",
        "fail-closed",
    ) as gw:
        assert post(gw.url, SHARED_KEY).status_code == 200
        durable_redis.stop()
        refused = post(gw.url, SHARED_KEY)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "state_unavailable"
        assert refused.headers["Retry-After"] == "1"
        durable_redis.start()
        wait_until(
            lambda: post(gw.url, SHARED_KEY).status_code == 200, 15, "requests to pass again"
        )
        requests = usage_total(gw.url, SHARED_KEY)["requests"]
        assert isinstance(requests, int) and requests >= 2


def workers_of(proc: ServeProcess) -> set[int]:
    assert proc.proc is not None
    pid = proc.proc.pid
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def metric_sum(url: str, name: str, **labels: str) -> float:
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            total += float(line.split()[-1])
    return total


def test_workers_share_the_port_the_limits_and_the_metrics(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    with gateway(files, upstream, redis_url, tmp_path / "w.log", "--workers", "2") as served:
        assert len(workers_of(served)) == 2
        away_from_minute_boundary()
        # A new connection per request: the kernel spreads them over both workers.
        statuses = [post(served.url, SHARED_KEY).status_code for _ in range(150)]
        assert statuses.count(200) == 100
        assert statuses.count(429) == 50
        # Whichever worker answers the scrape, the counters are the sum of both.
        assert metric_sum(served.metrics_url, "llmrouter_requests_total", code="200") == 100
        assert metric_sum(served.metrics_url, "llmrouter_admission_refusals_total") == 50
        assert metric(served.metrics_url, "llmrouter_config_models") == 1


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_them_all(
    files: tuple[Path, Path], upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "w.log"
    with gateway(files, upstream, redis_url, log, "--workers", "2") as served:
        first = workers_of(served)
        victim = min(first)
        time.sleep(5)  # older than a worker that fails as it starts (never replaced)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(workers_of(served) - {victim}) == 2, 10, "a new worker")
        wait_until(lambda: post(served.url, SHARED_KEY).status_code == 200, 10, "serving")
        assert f"worker {victim} exited (-9); starting another" in log.read_text()
        assert served.proc is not None
        supervisor, workers = served.proc, workers_of(served)
        supervisor.terminate()
        assert supervisor.wait(10) == 0
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def refusal(*args: str) -> str:
    """What `llmrouter serve` says when it refuses its arguments (exit 2)."""
    done = subprocess.run(llmrouter("serve", *args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_workers_need_shared_state(files: tuple[Path, Path]) -> None:
    resources, keys = files
    said = refusal("-f", str(resources), "--keys-file", str(keys), "--workers", "2")
    assert "--workers 2 needs --state redis://" in said
    said = refusal("-f", str(resources), "--workers", "none")
    assert "expected a number of processes (1 or more) or auto" in said
    said = refusal("-f", str(resources), "--state", "redis://r:port/0")
    assert "'redis://r:port/0': Port could not be cast" in said
    assert "expected redis://HOST:PORT/DB" in said
