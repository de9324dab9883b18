"""Gateways side by side, on one machine, with one upstream and one load generator.

Upstream: Debian's nginx serving a canned OpenAI chat response and a canned SSE stream.
Systems: the upstream alone; a minimal aiohttp pass-through (the floor for any aiohttp
gateway); llmrouter with every policy on (key auth, tenant limits, budget, metrics, usage),
state in memory and in Redis, then Redis with one worker per core; LiteLLM's proxy
(litellm[proxy], workers = cores) with its master key alone, then in its production shape with
PostgreSQL and a virtual key with a budget and limits (hack/bench_litellm.py).
Load: wrk (closed loop) for the maximum rate; vegeta at a fixed rate (no coordinated
omission) at 1 client-equivalent, 50% and 80% of each system's own maximum.

    .venv/bin/python hack/bench_compare.py [--seconds 10] [--skip-litellm] [--force] [--smoke]

Needs nginx and wrk (Debian), vegeta (`go install github.com/tsenart/vegeta/v12`), LiteLLM in
its own virtualenv, PostgreSQL and Prisma (hack/bench-tools.sh installs all of them).
A benchmark, not a test: it refuses a busy machine unless --force, and then says so.
--smoke checks that it still runs: a second per phase, rates capped, no LiteLLM (so no
PostgreSQL), on a busy machine too (hack/bench-tools.sh --smoke installs what it needs); it
fails when a request failed. What each process prints goes to a log file of its own, in a
folder named at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_litellm import start_litellm, stop_litellm
from bench_logs import Logs

CACHE = Path(os.environ.get("LLMROUTER_CACHE", Path.home() / ".cache" / "llmrouter"))
TOOLS = CACHE / "bench"
SMOKE_MAX_RATE = 300
"""--smoke: fixed rates stay this low, so that a short run on a busy machine fails only when
something is broken."""
KEY = "llmr_bench_compare_key_000000001"
CHAT = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)


def _chunk(delta: dict[str, str] | None, usage: dict[str, int] | None = None) -> str:
    doc: dict[str, object] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "s",
        "choices": [],
    }
    if delta is not None:
        doc["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    if usage is not None:
        doc["usage"] = usage
    # written into nginx's configuration, which turns \\n back into a newline
    return f"data: {json.dumps(doc)}\\n\\n"


SSE = (
    "".join(_chunk({"content": w}) for w in ("Hello", " there", "!"))
    + _chunk(None, {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    + "data: [DONE]\\n\\n"
)
BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
)
STREAM_BODY = json.dumps(
    {
        "model": "s",
        "stream": True,
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "hello"}],
    }
)
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: m}
spec:
  external: {provider: openai-compatible, baseURL: "JSON/v1", model: m}
  pricing: {inputPerMillion: "1", outputPerMillion: "2"}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: s}
spec:
  external: {provider: openai-compatible, baseURL: "SSE/v1", model: s}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: bench}
spec:
  models: [m, s]
  limits: {requestsPerMinute: 100000000, requestsPerDay: 1000000000,
           tokensPerMinute: 1000000000, tokensPerMonth: 100000000000, maxConcurrent: 10000}
  budget: {monthlyUSD: "1000000", onExceeded: Block}
  apiKeys: [{name: k, role: developer}]
"""
FLOOR = """
import sys
import aiohttp
import uvloop
from aiohttp import web

json_url, sse_url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def session(app):
    app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["s"].close()

async def proxy(request):
    body = await request.read()
    url = sse_url if b'"stream": true' in body else json_url
    async with request.app["s"].post(url, data=body,
                                     headers={"Content-Type": "application/json"}) as up:
        out = web.StreamResponse(status=up.status,
                                 headers={"Content-Type": up.headers["Content-Type"]})
        await out.prepare(request)
        async for chunk in up.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out

app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_post("/v1/chat/completions", proxy)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class System:
    name: str
    url: str
    auth: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    launch: Callable[[], tuple[str, str, list[subprocess.Popen[bytes]]]] | None = None
    """Starts the system when its turn comes: (url, bearer key, processes)."""
    stop_with: Callable[[list[subprocess.Popen[bytes]]], None] | None = None
    failed: str = ""

    def pids(self) -> list[int]:
        """Its processes and all their descendants (workers, engines, databases)."""
        found: list[int] = []
        todo = [proc.pid for proc in self.procs]
        while todo:
            pid = todo.pop()
            found.append(pid)
            children = subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split()
            todo += [int(c) for c in children]
        return found

    def cpu_s(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(match.group(1)) if match else 0
        return total / 1024

    def stop(self) -> None:
        if self.stop_with is not None:
            self.stop_with(self.procs)
            self.procs = []
            return
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def tool(name: str) -> str:
    for candidate in (TOOLS / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    sys.exit(f"{name} not found: run hack/bench-tools.sh")


def wait_ready(
    url: str, auth: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            out = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    f"Authorization: Bearer {auth}",
                    "-d",
                    BODY,
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if out == "200":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200")


def wrk_max(system: System, seconds: float, connections: int = 64) -> float:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    headers = f'wrk.headers["Authorization"] = "Bearer {system.auth}"\n' if system.auth else ""
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{headers}'
    )
    before = system.cpu_s()
    out = subprocess.run(
        [
            tool("wrk"),
            "-t2",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "-s",
            str(script),
            system.url,
        ],
        capture_output=True,
        text=True,
    ).stdout
    cpu = system.cpu_s() - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    system.results["max_rps"] = rps
    system.results["cpu_s_per_1k"] = cpu / total * 1000
    system.results["failed"] = (
        system.results.get("failed", 0)
        + (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0)
    )
    return rps


def vegeta_at(system: System, rate: float, seconds: float) -> tuple[float, float]:
    body = Path(tempfile.mkstemp(suffix=".json")[1])
    body.write_text(BODY)
    target = (
        f"POST {system.url}\nContent-Type: application/json\n"
        + (f"Authorization: Bearer {system.auth}\n" if system.auth else "")
        + f"@{body}\n"
    )
    attack = subprocess.run(
        [
            tool("vegeta"),
            "attack",
            f"-rate={max(1, int(rate))}/s",
            f"-duration={int(seconds)}s",
            "-keepalive=true",
        ],
        input=target.encode(),
        capture_output=True,
    )
    report = subprocess.run(
        [tool("vegeta"), "report", "-type=json"], input=attack.stdout, capture_output=True
    )
    doc = json.loads(report.stdout)
    system.results["failed"] = system.results.get("failed", 0) + round(
        doc["requests"] * (1 - doc["success"])
    )
    return doc["latencies"]["50th"] / 1e6, doc["latencies"]["99th"] / 1e6


SOAKABLE = {
    "memory": "llmrouter-memory",
    "redis": "llmrouter-redis",
    "workers": "llmrouter-redis-workers",
}
"""--soak-system: the llmrouter configuration (named as its log) that a soak starts alone."""


def soak(system: System, minutes: float, smoke: bool) -> None:
    """Half of the system's maximum rate for ``minutes``; resident memory after each slice."""
    slice_s = 1 if smoke else 30
    rate = wrk_max(system, 1 if smoke else 5) / 2
    share = "50% of max"
    if smoke and rate > SMOKE_MAX_RATE:
        rate, share = SMOKE_MAX_RATE, "smoke: capped"
    system.results["failed"] = 0
    rss = []
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        p50, p99 = vegeta_at(system, rate, slice_s)
        rss.append(system.rss_mib())
        print(
            f"  {len(rss) * slice_s:5.0f} s: {rate:.0f} req/s, p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, RSS {rss[-1]:.1f} MiB",
            flush=True,
        )
    warm, last = rss[min(1, len(rss) - 1)], rss[-1]
    print(
        f"\nsoak of {system.name}: {minutes:g} min at {rate:.0f} req/s ({share}); "
        f"RSS after warm-up {warm:.1f} MiB, at the end {last:.1f} MiB "
        f"({(last - warm) / warm * 100:+.1f}%); failed requests: {system.results['failed']}"
    )


async def ttft_ms(system: System, n: int) -> float:
    headers = {"Content-Type": "application/json"}
    if system.auth:
        headers["Authorization"] = f"Bearer {system.auth}"
    samples = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            started = time.perf_counter()
            async with http.post(system.url, data=STREAM_BODY, headers=headers) as resp:
                await resp.content.readany()
                samples.append(time.perf_counter() - started)
                await resp.read()
    samples.sort()
    return samples[len(samples) // 2] * 1000


def start_nginx(tmp: Path, json_port: int, sse_port: int, logs: Logs) -> subprocess.Popen[bytes]:
    conf = tmp / "nginx.conf"
    sse = SSE.replace('"', '\\"')  # nginx reads \" and \n inside a double-quoted string
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {logs.path("nginx-error")} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{json_port};
    location / {{ default_type application/json; return 200 '{CHAT}'; }}
  }}
  server {{
    listen 127.0.0.1:{sse_port};
    location / {{ default_type text/event-stream; return 200 "{sse}"; }}
  }}
}}
""")
    return logs.popen("nginx", [tool("nginx"), "-c", str(conf), "-p", str(tmp)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--force", action="store_true", help="run on a busy machine anyway")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        metavar="MINUTES",
        help="only soak llmrouter at 50%% of its maximum this long",
    )
    parser.add_argument(
        "--soak-system",
        choices=list(SOAKABLE),
        default="memory",
        help="which llmrouter to soak: in-memory state, Redis, or Redis with workers = cores",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that it runs: 1 s per phase, capped rates, no LiteLLM; measures nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.skip_litellm, args.force = 1.0, True, True
    load = os.getloadavg()[0]
    noisy = load > 0.5
    if noisy and not args.force:
        sys.exit(f"load average {load:.2f}: the machine is busy; wait, or --force (noisy)")
    with Logs("bench-compare") as logs:
        failed = run(args, logs, load, noisy)
    if failed and args.smoke:
        sys.exit(f"failed: {failed}")


def run(args: argparse.Namespace, logs: Logs, load: float, noisy: bool) -> str:
    """Runs every system, prints the table; what failed, if anything ("" if nothing did)."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        json_port, sse_port = free_port(), free_port()
        nginx = start_nginx(tmp, json_port, sse_port, logs)
        json_url = f"http://127.0.0.1:{json_port}/v1/chat/completions"
        sse_url = f"http://127.0.0.1:{sse_port}/v1/chat/completions"
        systems = [System("upstream (nginx)", json_url, procs=[nginx])]
        (tmp / "floor.py").write_text(FLOOR)
        port = free_port()
        if not args.soak_minutes:
            systems.append(
                System(
                    "aiohttp pass-through (uvloop)",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    procs=[
                        logs.popen(
                            "aiohttp-floor",
                            [sys.executable, str(tmp / "floor.py"), json_url, sse_url, str(port)],
                        )
                    ],
                )
            )
        resources = tmp / "resources.yaml"
        resources.write_text(
            RESOURCES.replace("JSON", f"http://127.0.0.1:{json_port}").replace(
                "SSE", f"http://127.0.0.1:{sse_port}"
            )
        )
        (tmp / "keys.yaml").write_text(f"bench:\n  k: {KEY}\n")
        redis_port = free_port()
        redis = logs.popen(
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
                str(tmp),
            ],
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for name, log, extra in (
            ("llmrouter (memory)", "llmrouter-memory", []),
            ("llmrouter (redis)", "llmrouter-redis", ["--state", redis_url]),
            (
                f"llmrouter (redis, {cores} workers)",
                "llmrouter-redis-workers",
                ["--state", redis_url, "--workers", str(cores)],
            ),
        ):
            if args.soak_minutes and log != SOAKABLE[args.soak_system]:
                continue  # a soak runs its system alone
            port = free_port()
            proc = logs.popen(
                log,
                [
                    sys.executable,
                    "-m",
                    "llmrouter",
                    "--log-level",
                    "WARNING",
                    "serve",
                    "-f",
                    str(resources),
                    "--keys-file",
                    str(tmp / "keys.yaml"),
                    "--port",
                    str(port),
                    *extra,
                ],
            )
            systems.append(
                System(name, f"http://127.0.0.1:{port}/v1/chat/completions", KEY, [proc])
            )
        if not args.skip_litellm and not args.soak_minutes:
            for database in (False, True):
                folder = tmp / ("litellm-db" if database else "litellm")
                folder.mkdir()
                systems.append(
                    System(
                        f"LiteLLM ({cores} workers, "
                        + ("Postgres, virtual key)" if database else "master key)"),
                        "",
                        launch=partial(
                            start_litellm,
                            folder,
                            cores,
                            f"http://127.0.0.1:{json_port}/v1",
                            f"http://127.0.0.1:{sse_port}/v1",
                            database=database,
                        ),
                        stop_with=stop_litellm,
                    )
                )
        try:
            for system in systems:
                if system.launch is None:
                    wait_ready(system.url, system.auth, system.procs)
            if args.soak_minutes:
                system = systems[-1]
                soak(system, args.soak_minutes, args.smoke)
                return failures([system])
            for system in systems:
                measure(system, args, json_port, sse_port, systems[0])
        finally:
            for system in systems:
                system.stop()
            redis.terminate()
            for folder in tmp.glob("litellm*"):
                for log in folder.glob("**/*.log"):
                    shutil.copy(log, logs.path(f"{folder.name}-{log.stem}"))
    report(systems, args, cores, load, noisy)
    return failures(systems)


def failures(systems: list[System]) -> str:
    """Systems that did not start or failed requests, and how; "" when none did."""
    return ", ".join(
        f"{s.name}: {s.failed}" if s.failed else f"{s.name}: {s.results['failed']:.0f} requests"
        for s in systems
        if s.failed or s.results.get("failed")
    )


def measure(
    system: System, args: argparse.Namespace, json_port: int, sse_port: int, upstream: System
) -> None:
    if system.launch is not None:  # started only for its turn: it idles noisily
        try:
            system.url, system.auth, system.procs = system.launch()
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            system.failed = f"did not start: {exc}"
            print(f"{system.name}: {system.failed}", file=sys.stderr)
            return
        wait_ready(system.url, system.auth, system.procs)
    cap = SMOKE_MAX_RATE if args.smoke else float("inf")
    if not args.smoke:
        vegeta_at(system, 20, 2)  # warm up
    system.results["p50_1"], system.results["p99_1"] = vegeta_at(system, 50, args.seconds)
    rps = wrk_max(system, args.seconds)
    if system is upstream:
        # nginx alone outruns any load generator on the same cores
        system.results.update(p50_50=0, p99_50=0, p50_80=0, p99_80=0)
    for share in (50, 80) if system is not upstream else ():
        p50, p99 = vegeta_at(system, min(rps * share / 100, cap), args.seconds)
        system.results[f"p50_{share}"], system.results[f"p99_{share}"] = p50, p99
    system.results["ttft"] = asyncio.run(
        ttft_ms(
            System(
                system.name,
                system.url.replace(str(json_port), str(sse_port)),
                system.auth,
                system.procs,
            ),
            20 if args.smoke else 200,
        )
    )
    system.results["rss"] = system.rss_mib()
    if system.launch is not None:
        system.stop()
    print(f"{system.name}: {rps:.0f} req/s at most", flush=True)


def report(
    systems: list[System], args: argparse.Namespace, cores: int, load: float, noisy: bool
) -> None:
    base = systems[0].results
    print(
        f"\n{cores} CPUs, {args.seconds:g} s per run; load average before: {load:.2f}"
        + (" — NOISY: the machine was busy" if noisy else "")
        + "\n"
    )
    print(
        "| system | max req/s | added p50 / p99 ms at 50 req/s | p50 / p99 ms at 50% of own max"
        " | p50 / p99 ms at 80% | added TTFT ms | CPU s / 1k req | RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in systems:
        r = s.results
        if s.failed:
            print(f"| {s.name} | {s.failed} |||||||")
            continue

        def added(key: str, r: dict[str, float] = r) -> str:
            return f"{r[key] - base[key]:.2f}"

        print(
            f"| {s.name} | {r['max_rps']:.0f} | {added('p50_1')} / {added('p99_1')} | "
            f"{r['p50_50']:.2f} / {r['p99_50']:.2f} | {r['p50_80']:.2f} / {r['p99_80']:.2f} | "
            f"{r['ttft'] - base['ttft']:.2f} | {r['cpu_s_per_1k']:.2f} | {r['rss']:.0f} |"
        )
    print(f"\nfailures: {failures(systems) or 'none'}")


if __name__ == "__main__":
    main()
