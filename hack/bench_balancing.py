"""Least-loaded balancing against round-robin, on uneven replicas of one model.

Two emulated llama-servers serve one model: each has 4 slots (--parallel 4) and queues
what does not fit, like llama-server; one generates a token every 5 ms, the other every
20 ms (a slower GPU). Both report their load on /metrics as llama-server does. A closed
loop of clients sends chat requests through the gateway, once per balancing strategy.

    .venv/bin/python hack/bench_balancing.py [--seconds 10] [--concurrency 12] [--smoke]

--smoke: a second per strategy, to check that the benchmark still runs.
"""

from __future__ import annotations

import argparse
import asyncio
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

KEY = "llmr_bench_balancing_key_000000001"
TOKENS = 8
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: m}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}, parallel: 4}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: bench}
spec:
  models: [m]
  apiKeys: [{name: k, role: developer}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_replica(port: int, slots: int, token_ms: float) -> None:
    slot = asyncio.Semaphore(slots)
    waiting = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal waiting
        await request.read()
        waiting += 1
        async with slot:
            waiting -= 1
            await asyncio.sleep(TOKENS * token_ms / 1000)
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length",
                        "message": {"role": "assistant", "content": "x" * TOKENS},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": TOKENS, "total_tokens": 13},
            }
        )

    async def metrics(request: web.Request) -> web.Response:
        processing = slots - slot._value
        return web.Response(
            text=f"llamacpp:requests_processing {processing}\n"
            f"llamacpp:requests_deferred {waiting}\n"
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS}
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.post(url, json=body) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: check that it runs, measure nothing"
    )
    parser.add_argument("--replica", nargs=3, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica:
        port, slots, token_ms = args.replica
        run_replica(int(port), int(slots), token_ms)
        return
    if args.smoke:
        args.seconds = 1.0
    with Logs("bench-balancing") as logs:
        report(args, compare(args, logs))


def report(args: argparse.Namespace, rows: list[tuple[str, float, float, float]]) -> None:
    print(
        f"\n{args.concurrency} concurrent clients for {args.seconds:g} s per strategy; "
        f"replicas with 4 slots each at 5 ms and 20 ms per token, {TOKENS} tokens a request\n"
    )
    print("| strategy | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, rps, p50, p99 in rows:
        print(f"| {name} | {rps:.1f} | {p50:.1f} | {p99:.1f} |")
    (_, rr, rr50, rr99), (_, ll, ll50, ll99) = rows
    print(
        f"\nleast-loaded vs round-robin: {ll / rr:.2f}x requests/s, "
        f"p50 {ll50 / rr50:.2f}x, p99 {ll99 / rr99:.2f}x"
    )


def compare(args: argparse.Namespace, logs: Logs) -> list[tuple[str, float, float, float]]:
    """(strategy, requests/s, p50 ms, p99 ms) of each strategy."""
    fast, slow = free_port(), free_port()
    replicas = [
        logs.popen(name, [sys.executable, __file__, "--replica", str(p), "4", str(ms)])
        for name, p, ms in (("replica-fast", fast, 5), ("replica-slow", slow, 20))
    ]
    rows = []
    try:
        for p, replica in zip((fast, slow), replicas, strict=True):
            asyncio.run(wait_ready(f"http://127.0.0.1:{p}/health", replica))
        for strategy in ("round-robin", "least-loaded"):
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "r.yaml").write_text(RESOURCES)
                Path(tmp, "keys.yaml").write_text(f"bench:\n  k: {KEY}\n")
                port = free_port()
                gateway = logs.popen(
                    f"llmrouter-{strategy}",
                    [
                        sys.executable,
                        "-m",
                        "llmrouter",
                        "--log-level",
                        "WARNING",
                        "serve",
                        "-f",
                        f"{tmp}/r.yaml",
                        "--keys-file",
                        f"{tmp}/keys.yaml",
                        "--endpoint",
                        f"m=http://127.0.0.1:{fast}/v1",
                        "--endpoint",
                        f"m=http://127.0.0.1:{slow}/v1",
                        "--port",
                        str(port),
                        "--balancer",
                        strategy,
                    ],
                )
                try:
                    asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz", gateway))
                    lat = asyncio.run(
                        load(
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                            args.seconds,
                            args.concurrency,
                        )
                    )
                finally:
                    gateway.terminate()
                    gateway.wait()
            q = statistics.quantiles(lat, n=100)
            rows.append((strategy, len(lat) / args.seconds, q[49] * 1000, q[98] * 1000))
    finally:
        for r in replicas:
            r.terminate()
            r.wait()
    return rows


if __name__ == "__main__":
    main()
