"""CPU time the gateway and Redis spend per request, every policy on (the tenant of
hack/bench_gateway.py: limits, a blocking budget, so each request reserves and settles).

CPU time per request moves much less than requests/s when other work shares the machine, so
two versions can be compared on a busy one: run each a few times, interleaved, e.g. with
PYTHONPATH pointing at another checkout's package view (see hack/typecheck.sh for how one is
laid out).

    .venv/bin/python hack/bench_cpu.py [--requests 20000] [--concurrency 16] [--no-budget]
                                       [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import BODY, KEY, RESOURCES, free_port, serve_command, wait_ready
from bench_logs import Logs

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def load(url: str, n: int, concurrency: int) -> int:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    todo = iter(range(n))
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            nonlocal failed
            for _ in todo:
                async with http.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    failed += resp.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--no-budget",
        action="store_true",
        help="the tenant without its budget: what reserving and settling it costs is the "
        "difference",
    )
    parser.add_argument("--smoke", action="store_true", help="a few hundred requests")
    args = parser.parse_args()
    n = 300 if args.smoke else args.requests
    up_port, gw_port, redis_port = free_port(), free_port(), free_port()
    bench_gateway = str(Path(__file__).resolve().parent / "bench_gateway.py")
    with tempfile.TemporaryDirectory() as tmp, Logs("bench-cpu") as logs:
        resources = RESOURCES
        if args.no_budget:
            resources = "\n".join(line for line in resources.splitlines() if "budget:" not in line)
        Path(tmp, "resources.yaml").write_text(resources)
        Path(tmp, "keys.yaml").write_text(f"bench:\n  k: {KEY}\n")
        redis = logs.popen(
            "redis",
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        )
        upstream = logs.popen(
            "upstream", [sys.executable, bench_gateway, "--upstream-port", str(up_port)]
        )
        state = ["--state", f"redis://127.0.0.1:{redis_port}/0"]
        gateway = logs.popen("llmrouter", serve_command(tmp, up_port, gw_port, state))
        procs = [redis, upstream, gateway]
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/health", upstream))
            url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/readyz", gateway))
            asyncio.run(load(url, max(50, n // 20), args.concurrency))  # warm-up
            before = cpu_seconds(gateway.pid), cpu_seconds(redis.pid)
            failed = asyncio.run(load(url, n, args.concurrency))
            after = cpu_seconds(gateway.pid), cpu_seconds(redis.pid)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    gw_us = (after[0] - before[0]) / n * 1e6
    redis_us = (after[1] - before[1]) / n * 1e6
    print("| process | CPU µs per request |")
    print("|---|---|")
    print(f"| gateway | {gw_us:.0f} |")
    print(f"| redis | {redis_us:.0f} |")
    print(f"\n{n} requests at concurrency {args.concurrency}; failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
