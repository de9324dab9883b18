"""What the audit log costs: the request path's share (building the record and queueing
it), the background writer's work per record (canonical JSON, SHA-256 chain, Merkle leaf,
the file write), and whole requests through an in-process gateway with and without an
audit log, one client, interleaved so both see the same machine.

    .venv/bin/python hack/bench_audit.py [--requests 2000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

from llmrouter.gateway.app import create_app
from llmrouter.gateway.audit.chain import new_key_pem
from llmrouter.gateway.audit_events import request_done
from llmrouter.gateway.auth import authenticate_key
from llmrouter.gateway.keys import AUDIT
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.usage import RequestRecord, Usage
from llmrouter.standalone import StandaloneSource

RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: a}
spec:
  llamacpp: {model: {url: "https://example.invalid/a.gguf"}}
  pricing: {inputPerMillion: "2", outputPerMillion: "4"}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: t}
spec: {models: [a], apiKeys: [{name: k, role: user}]}
"""
KEY = "llmr_bench_key_000000000000000001"


def source(directory: Path, upstream: str) -> StandaloneSource:
    (directory / "r.yaml").write_text(RESOURCES)
    (directory / "keys.yaml").write_text(f"t:\n  k: {KEY}\n")
    return StandaloneSource([directory / "r.yaml"], directory / "keys.yaml", {"a": [upstream]})


def settings(directory: Path, name: str) -> GatewaySettings:
    return GatewaySettings(
        audit_file=str(directory / name / "audit.jsonl"),
        audit_signing_key_file=str(directory / "signing.key"),
    )


async def time_request_path(directory: Path, n: int) -> tuple[list[float], float]:
    """µs per record on the request path; µs of background work per record."""
    config = source(directory, "http://127.0.0.1:9/v1").load()
    app = create_app(settings(directory, "path"), ConfigStore(config))
    writer = app[AUDIT]
    writer.max_queue = n + 1
    identity = authenticate_key(KEY, config)
    record = RequestRecord(
        request_id="0" * 32,
        tenant=identity.tenant.id,
        key_name="k",
        model="a",
        endpoint="chat",
        status=200,
        usage=Usage(120, 40),
        cost_usd=Decimal("0.00040"),
        duration_s=0.2315,
        ttft_s=0.051,
        stream=True,
    )
    steps = ["rule 0->a"]
    out = []
    for _ in range(n):
        started = time.perf_counter_ns()
        request_done(app, identity, record, steps)
        out.append((time.perf_counter_ns() - started) / 1000)
    # Now the writer takes the n queued records: its cost per record, off the request path.
    started = time.perf_counter()
    await writer.start()
    while writer.written < n:
        await asyncio.sleep(0.001)
    background = (time.perf_counter() - started) / n * 1e6
    await writer.close()
    return out, background


async def upstream_app() -> web.Application:
    answer = (
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],'
        b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
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
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def time_requests(directory: Path, n: int) -> dict[str, list[float]]:
    up_runner, upstream = await serve(await upstream_app())
    config = source(directory, f"{upstream}/v1").load()
    runners, gateways = [up_runner], {}
    for name, gateway_settings in (
        ("without", GatewaySettings()),
        ("with", settings(directory, "whole")),
    ):
        runner, url = await serve(create_app(gateway_settings, ConfigStore(config)))
        runners.append(runner)
        gateways[name] = url
    times: dict[str, list[float]] = {name: [] for name in gateways}
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "a", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            # Each goes first every other time: the first of a pair was seen to pay more.
            pairs = list(gateways.items())
            for name, url in pairs if i % 2 else reversed(pairs):
                started = time.perf_counter_ns()
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 200
                times[name].append((time.perf_counter_ns() - started) / 1000)
    for runner in reversed(runners):
        await runner.cleanup()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="a few hundred requests")
    args = parser.parse_args()
    n = 200 if args.smoke else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        private, _ = new_key_pem()
        (directory / "signing.key").write_bytes(private)
        path, background = asyncio.run(time_request_path(directory, n * 10))
        requests = asyncio.run(time_requests(directory, n))
    median = statistics.median
    print("| what | median µs | p99 µs |")
    print("|---|---|---|")
    print(f"| request path: record built and queued | {median(path):.1f} | {_p99(path):.1f} |")
    print(f"| background writer, per record | {background:.1f} | {background:.1f} |")
    for name, values in requests.items():
        print(f"| whole request, {name} audit log | {median(values):.0f} | {_p99(values):.0f} |")
    added = median(requests["with"]) - median(requests["without"])
    print(f"\nadded at the median by the audit log: {added:.0f} µs (n={n} each)")
    return 0


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


if __name__ == "__main__":
    sys.exit(main())
