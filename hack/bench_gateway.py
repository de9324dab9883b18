"""Gateway overhead on this machine: added latency and requests/s in front of a canned
OpenAI-compatible upstream. A benchmark, not a test: run it on a quiet machine.

    .venv/bin/python hack/bench_gateway.py [--requests 2000] [--seconds 10] [--concurrency 16]
                                           [--redis] [--smoke]

--smoke: a second per phase and few requests, to check that the benchmark still runs.

The gateway runs with key auth, every tenant and key limit, a budget, metrics and usage
accounting; with --redis its state is in a redis-server started for the run.

The upstream, the gateway and this client are separate processes; on a 2-core machine the
client competes with the gateway for CPU, so requests/s is a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_logs import Logs

KEY = "llmr_bench_key_000000000000000000"
CANNED = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: bench}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "1", outputPerMillion: "2"}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: bench}
spec:
  models: [bench]
  # Every policy on, set high enough that none refuses: the cost of checking is measured.
  limits: {requestsPerMinute: 100000000, requestsPerDay: 1000000000,
           tokensPerMinute: 1000000000, tokensPerMonth: 100000000000, maxConcurrent: 10000}
  budget: {monthlyUSD: "1000000", onExceeded: Block}
  apiKeys: [{name: k, role: developer, limits: {requestsPerMinute: 100000000}}]
"""
BODY = b'{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":1}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(tmp: str, up_port: int, gw_port: int, state: list[str]) -> list[str]:
    """`llmrouter serve` on the files in ``tmp``, in front of the canned upstream."""
    return [
        sys.executable,
        "-m",
        "llmrouter",
        "--log-level",
        "WARNING",
        "serve",
        "-f",
        f"{tmp}/resources.yaml",
        "--keys-file",
        f"{tmp}/keys.yaml",
        "--endpoint",
        f"bench=http://127.0.0.1:{up_port}/v1",
        "--port",
        str(gw_port),
        *state,
    ]


def run_upstream(port: int) -> None:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=CANNED, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def sequential(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for _ in range(n):
        started = time.perf_counter()
        async with http.post(url, data=BODY, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        latencies.append(time.perf_counter() - started)
    return latencies


async def closed_loop(url: str, seconds: float, concurrency: int) -> tuple[int, int]:
    done = errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                async with http.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] * 1000


async def measure(args: argparse.Namespace, upstream: str, gateway: str) -> int:
    """Prints the table; returns the number of failed requests through the gateway."""
    warmup = 20 if args.smoke else 200
    async with aiohttp.ClientSession() as http:
        await sequential(http, upstream, warmup)
        await sequential(http, gateway, warmup)
        direct = await sequential(http, upstream, args.requests)
        via = await sequential(http, gateway, args.requests)
    rps_direct, _ = await closed_loop(upstream, args.seconds, args.concurrency)
    rps_gateway, errors = await closed_loop(gateway, args.seconds, args.concurrency)
    print(
        f"\n{args.requests} sequential requests, then {args.seconds:g} s closed loop at "
        f"concurrency {args.concurrency}; {os.cpu_count()} CPUs\n"
    )
    print("| path | p50 ms | p90 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|")
    for name, lat, done in (
        ("upstream direct", direct, rps_direct),
        ("through llmrouter", via, rps_gateway),
    ):
        print(
            f"| {name} | {pct(lat, 50):.3f} | {pct(lat, 90):.3f} | {pct(lat, 99):.3f} | "
            f"{done / args.seconds:.0f} |"
        )
    print(
        f"\nadded latency: p50 {pct(via, 50) - pct(direct, 50):.3f} ms, "
        f"p99 {pct(via, 99) - pct(direct, 99):.3f} ms; gateway errors: {errors}"
    )
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", action="store_true", help="keep the gateway's state in Redis")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: check that it runs, measure nothing"
    )
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_port:
        run_upstream(args.upstream_port)
        return
    if args.smoke:
        args.requests, args.seconds = 50, 1.0
    up_port, gw_port, redis_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, Logs("bench-gateway") as logs:
        state: list[str] = []
        procs: list[subprocess.Popen[bytes]] = []
        if args.redis:
            procs.append(
                logs.popen(
                    "redis",
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        tmp,
                    ],
                )
            )
            state = ["--state", f"redis://127.0.0.1:{redis_port}/0"]
        Path(tmp, "resources.yaml").write_text(RESOURCES)
        Path(tmp, "keys.yaml").write_text(f"bench:\n  k: {KEY}\n")
        procs += [
            logs.popen("upstream", [sys.executable, __file__, "--upstream-port", str(up_port)]),
            logs.popen("llmrouter", serve_command(tmp, up_port, gw_port, state)),
        ]
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/health", procs[-2]))
            asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/readyz", procs[-1]))
            errors = asyncio.run(
                measure(
                    args,
                    f"http://127.0.0.1:{up_port}/v1/chat/completions",
                    f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                )
            )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    if errors and args.smoke:
        sys.exit(f"{errors} requests through the gateway failed")


if __name__ == "__main__":
    main()
