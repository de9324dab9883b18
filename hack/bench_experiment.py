"""What an active experiment adds to a request: the assignment work on the request path
(finding the experiment, hashing the unit, applying the variant's overrides), timed alone,
and whole requests through an in-process gateway with and without an experiment, one client,
interleaved so both see the same machine.

    .venv/bin/python hack/bench_experiment.py [--requests 2000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.app import create_app
from llmrouter.gateway.experiments.assignment import (
    assign,
    experiment_for,
    unit_of,
    with_variant,
)
from llmrouter.gateway.openai_request import Operation, parse_request
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource

RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: a}
spec: {llamacpp: {model: {url: "https://example.invalid/a.gguf"}}}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: b}
spec: {llamacpp: {model: {url: "https://example.invalid/b.gguf"}}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: t}
spec: {models: [a, b], apiKeys: [{name: k, role: user}]}
"""
EXPERIMENT = """
---
apiVersion: llmrouter.io/v1alpha1
kind: Experiment
metadata: {name: e}
spec:
  model: a
  tenants: [t]
  variants:
    - {name: control, model: a}
    - {name: other, model: b, overrides: {temperature: 0.2}}
  control: control
  metrics: {primary: {name: latency}}
"""
KEY = "llmr_bench_key_000000000000000001"


def load(directory: Path, with_experiment: bool, upstream: str) -> StandaloneSource:
    files = directory / ("with" if with_experiment else "without")
    files.mkdir()
    (files / "r.yaml").write_text(RESOURCES + (EXPERIMENT if with_experiment else ""))
    keys = directory / "keys.yaml"
    keys.write_text(f"t:\n  k: {KEY}\n")
    return StandaloneSource([files], keys, {"a": [upstream], "b": [upstream]})


def time_assignment(source: StandaloneSource, n: int) -> list[float]:
    config = source.load()
    body = {"model": "a", "user": "", "messages": [{"role": "user", "content": "hello"}]}
    out = []
    for i in range(n):
        body["user"] = f"user-{i}"
        request = parse_request(Operation.CHAT, orjson.dumps(body))  # done for every request
        started = time.perf_counter_ns()
        policy = experiment_for(config, "default/t", "a")
        assert policy is not None
        unit = unit_of(policy, "default/t", "key:k", "k", body, {}, "rid")
        trial = assign(policy, unit) if unit else None
        if trial is not None:
            request.with_body(with_variant(body, trial.variant))
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


async def upstream_app() -> web.Application:
    answer = orjson.dumps(
        {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    )

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def time_requests(directory: Path, n: int) -> dict[str, list[float]]:
    up_runner, upstream = await serve(await upstream_app())
    gateways = {}
    runners = [up_runner]
    for name, flag in (("without", False), ("with", True)):
        app = create_app(
            GatewaySettings(), ConfigStore(load(directory, flag, f"{upstream}/v1").load())
        )
        runner, url = await serve(app)
        runners.append(runner)
        gateways[name] = url
    times: dict[str, list[float]] = {name: [] for name in gateways}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            body = {
                "model": "a",
                "user": f"user-{i}",
                "messages": [{"role": "user", "content": "hello"}],
            }
            for name, url in gateways.items():
                started = time.perf_counter_ns()
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 200
                times[name].append((time.perf_counter_ns() - started) / 1000)
    for runner in runners:
        await runner.cleanup()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--smoke", action="store_true", help="a few hundred requests, to check it runs"
    )
    args = parser.parse_args()
    n = 200 if args.smoke else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = load(_fresh(directory, "a"), True, "http://127.0.0.1:9/v1")
        assignment = time_assignment(source, n * 10)
        requests = asyncio.run(time_requests(_fresh(directory, "b"), n))
    median = statistics.median
    print("| what | median µs | p99 µs |")
    print("|---|---|---|")
    print(f"| assignment work per request | {median(assignment):.1f} | {_p99(assignment):.1f} |")
    for name, values in requests.items():
        print(f"| whole request, {name} experiment | {median(values):.0f} | {_p99(values):.0f} |")
    added = median(requests["with"]) - median(requests["without"])
    print(f"\nadded at the median by an active experiment: {added:.0f} µs (n={n} each)")
    return 0


def _fresh(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir()
    return path


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


if __name__ == "__main__":
    sys.exit(main())
