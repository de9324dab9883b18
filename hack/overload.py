"""Overload and drain of the gateway, measured.

overload: one `llmrouter serve` process in front of nginx (a canned chat answer). wrk finds
its maximum rate; vegeta then offers twice that rate, open loop, with the cap on requests
in flight and without it. Reported: goodput (200s per second) as a share of the maximum,
what the refusals were, and the latency of the answered requests.

drain: `llmrouter serve --workers 2 --state redis://…` in front of an emulated model server
that takes 20 ms to answer and streams 10 events 50 ms apart. Clients on kept-alive
connections send requests and streams without pause while the supervisor gets SIGHUP (each
worker drains in turn); then one process gets SIGTERM with requests and streams in flight.
Reported: failed requests, streams cut short.

    .venv/bin/python hack/overload.py [--seconds 8] [--max-in-flight 256] [--slots 32]
        [--model-cap 64] [--phase gateway|model|drain]...

Needs nginx, wrk and redis-server (Debian) and vegeta (hack/bench-tools.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import multiprocessing
import os
import re
import shutil
import signal
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

REPO = Path(__file__).resolve().parent.parent
KEY = "llmr_overload_bench_key_000000001"
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: m}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: bench}
spec:
  models: [m]
  apiKeys: [{name: k, role: developer}]
"""
CHAT = (
    '{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    '"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],'
    '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(
        name, path=str(Path.home() / ".cache/llmrouter/bench/bin")
    )
    if found is None:
        sys.exit(f"{name} not found: run hack/bench-tools.sh")
    return found


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args!r} exited ({proc.returncode})")
        try:
            host, port = url.removeprefix("http://").split("/")[0].split(":")
            with socket.create_connection((host, int(port))):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} not ready")


def gateway(
    logs: Logs, name: str, tmp: Path, upstream: str, *extra: str
) -> tuple[str, subprocess.Popen[bytes]]:
    (tmp / "resources.yaml").write_text(RESOURCES)
    (tmp / "keys.yaml").write_text(f"bench:\n  k: {KEY}\n")
    port = free_port()
    cmd = [
        sys.executable, "-m", "llmrouter", "serve", "-f", str(tmp / "resources.yaml"),
        "--keys-file", str(tmp / "keys.yaml"), "--endpoint", f"m={upstream}",
        "--port", str(port), *extra,
    ]  # fmt: skip
    proc = logs.popen(name, cmd, env={**os.environ, "PYTHONSAFEPATH": "1"}, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    time.sleep(1)  # workers, if any, all listening
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


def max_rate(url: str, tmp: Path, seconds: float) -> float:
    script = tmp / "post.lua"
    script.write_text(
        f"wrk.method = \"POST\"\nwrk.body = '{BODY.decode()}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    done = subprocess.run(
        [tool("wrk"), "-t1", "-c16", f"-d{int(seconds)}s", "-s", str(script),
         f"{url}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "Non-2xx" in done.stdout:
        sys.exit(f"wrk saw failures:\n{done.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    assert found, done.stdout
    return float(found.group(1))


def offer(url: str, tmp: Path, rate: float, seconds: float) -> dict[str, object]:
    """vegeta at ``rate`` for ``seconds``: answered per second within those seconds, what
    was not answered, latencies of the answered."""
    (tmp / "body.json").write_bytes(BODY)
    target = (
        f"POST {url}/v1/chat/completions\nAuthorization: Bearer {KEY}\n"
        f"Content-Type: application/json\n@{tmp / 'body.json'}\n"
    )
    attack = subprocess.run(
        [tool("vegeta"), "attack", f"-rate={int(rate)}/s", f"-duration={seconds}s", "-timeout=30s",
         "-max-workers=4096"],
        input=target.encode(), capture_output=True, check=True,
    )  # fmt: skip
    lines = subprocess.run(
        [tool("vegeta"), "encode", "--to", "json"], input=attack.stdout, capture_output=True
    ).stdout.splitlines()
    results = [json.loads(line) for line in lines]
    start = min(_sent_at(r) for r in results)
    ok = [r["latency"] / 1e6 for r in results if r["code"] == 200]
    # Goodput: answers that came within the attack, not those the queue let out after it.
    in_time = [
        r
        for r in results
        if r["code"] == 200 and _sent_at(r) + r["latency"] / 1e9 <= start + seconds
    ]
    refused: dict[str, int] = {}
    for r in results:
        if r["code"] == 200:
            continue
        try:
            code = json.loads(base64.b64decode(r["body"]))["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = re.sub(r"127\.0\.0\.1:\d+", "…", r.get("error") or "?")[-60:]
        key = f"{r['code']} {code}"
        refused[key] = refused.get(key, 0) + 1
    ok.sort()
    return {
        "offered": len(results) / seconds,
        "goodput": len(in_time) / seconds,
        "refused": refused,
        "p50": statistics.median(ok) if ok else float("nan"),
        "p99": ok[int(len(ok) * 0.99) - 1] if ok else float("nan"),
    }


def _sent_at(result: dict[str, object]) -> float:
    # vegeta writes nanoseconds; datetime reads at most microseconds
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", str(result["timestamp"]))
    return datetime.datetime.fromisoformat(stamp).timestamp()


def nginx(logs: Logs, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    conf = tmp / "nginx.conf"
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
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{CHAT}'; }}
  }}
}}
""")
    proc = logs.popen("nginx", [tool("nginx"), "-c", str(conf), "-p", str(tmp)])
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return f"{url}/v1", proc


def overload(logs: Logs, seconds: float, cap: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        upstream, ng = nginx(logs, tmp)
        try:
            for label, limit in ((f"--max-in-flight {cap}", cap), ("no cap", 10**9)):
                url, gw = gateway(
                    logs, f"gateway-{limit}", tmp, upstream, "--max-in-flight", str(limit)
                )
                try:
                    top = max_rate(url, tmp, seconds)
                    r = offer(url, tmp, 2 * top, seconds)
                finally:
                    stop(gw)
                print(
                    f"gateway-bound, {label}: maximum {top:.0f} req/s (wrk); offered "
                    f"{r['offered']:.0f} req/s (vegeta, 2x): answered {r['goodput']:.0f} req/s = "
                    f"{100 * float(r['goodput']) / top:.0f}% of the maximum, "  # type: ignore[arg-type]
                    f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; not answered {r['refused']}"
                )
        finally:
            stop(ng)


def emulated_model(port: int, slots: int) -> None:
    """A model server like llama-server: ``slots`` requests at a time (--parallel), the rest
    queued; 100 ms per answer, or 10 events 50 ms apart for a stream."""
    slot = asyncio.Semaphore(slots)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        async with slot:
            if not body.get("stream"):
                await asyncio.sleep(0.1)
                return web.Response(text=CHAT, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(10):
                await asyncio.sleep(0.05)
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}  # fmt: skip
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_model(slots: int) -> tuple[str, multiprocessing.Process]:
    port = free_port()
    model = multiprocessing.Process(target=emulated_model, args=(port, slots), daemon=True)
    model.start()
    time.sleep(1)
    return f"http://127.0.0.1:{port}/v1", model


def model_bound(logs: Logs, seconds: float, slots: int, cap: int) -> None:
    """The model server is the limit: its maximum is slots / 100 ms; offered twice that.
    A cap above the slots keeps the server busy while the gateway does its own part."""
    top = slots / 0.1
    upstream, model = start_model(slots)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for label, limit in ((f"--max-in-flight {cap}", cap), ("no cap", 10**9)):
                url, gw = gateway(
                    logs, f"gateway-model-{limit}", tmp, upstream, "--max-in-flight", str(limit)
                )
                try:
                    r = offer(url, tmp, 2 * top, seconds)
                finally:
                    stop(gw)
                print(
                    f"model-bound, {label}: maximum {top:.0f} req/s ({slots} slots x 100 ms); "
                    f"offered {r['offered']:.0f} req/s: answered {r['goodput']:.0f} req/s = "
                    f"{100 * float(r['goodput']) / top:.0f}% of the maximum, "  # type: ignore[arg-type]
                    f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; not answered {r['refused']}"
                )
    finally:
        model.terminate()


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.streams = 0
        self.failed: dict[str, int] = {}

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


async def client(url: str, stream: bool, tally: Tally, until: float) -> None:
    """One kept-alive connection at a time, requests back to back."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        while time.monotonic() < until:
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        tally.fail(f"{resp.status} {text[:80]}")
                    elif stream and not text.rstrip().endswith("data: [DONE]"):
                        tally.fail("stream cut short")
                    else:
                        tally.ok += 1
                        tally.streams += stream
            except aiohttp.ClientError as exc:
                tally.fail(type(exc).__name__)


async def steady_load(
    url: str, clients: int, seconds: float, event_at: float, event: object
) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    tasks = [asyncio.create_task(client(url, i % 2 == 1, tally, until)) for i in range(clients)]
    await asyncio.sleep(event_at)
    event()  # type: ignore[operator]
    await asyncio.gather(*tasks)
    return tally


def drain(logs: Logs, seconds: float) -> None:
    upstream, model = start_model(64)
    redis_port = free_port()
    redis = logs.popen(
        "redis",
        [tool("redis-server"), "--port", str(redis_port), "--save", "", "--appendonly", "no"],
    )
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            state = f"redis://127.0.0.1:{redis_port}/0"
            url, gw = gateway(
                logs, "gateway-workers", tmp, upstream, "--workers", "2", "--state", state
            )
            try:
                tally = asyncio.run(
                    steady_load(url, 16, seconds, 1.0, lambda: gw.send_signal(signal.SIGHUP))
                )
                log = logs.path("gateway-workers").read_text()
                restarted = "restart done" in log
            finally:
                stop(gw)
            print(
                f"SIGHUP under steady load (16 clients, half streaming, {seconds:.0f} s): "
                f"{tally.ok} answered ({tally.streams} streams), failed {tally.failed or 0}; "
                f"both workers replaced: {restarted}"
            )

            url, gw = gateway(logs, "gateway-one", tmp, upstream)
            in_flight = Tally()

            async def sigterm_with_load() -> None:
                until = time.monotonic() + 3
                tasks = [
                    asyncio.create_task(client(url, i % 2 == 1, in_flight, until))
                    for i in range(16)
                ]
                await asyncio.sleep(1.0)
                before = in_flight.ok
                gw.send_signal(signal.SIGTERM)
                await asyncio.gather(*tasks)
                print(
                    f"SIGTERM to one process with 16 clients busy: answered "
                    f"{in_flight.ok - before} after the signal, streams cut: "
                    f"{in_flight.failed.get('stream cut short', 0)}; exit status "
                    f"{gw.wait(40)}; refused afterwards (no listener, expected): "
                    f"{ {k: v for k, v in in_flight.failed.items() if k != 'stream cut short'} }"
                )

            asyncio.run(sigterm_with_load())
    finally:
        stop(redis)
        model.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--slots", type=int, default=32, help="of the emulated model server")
    parser.add_argument("--model-cap", type=int, help="--max-in-flight before it (2 x slots)")
    parser.add_argument(
        "--phase",
        choices=["gateway", "model", "drain"],
        action="append",
        help="run only this part (repeatable; default: all)",
    )
    args = parser.parse_args()
    phases = args.phase or ["gateway", "model", "drain"]
    with Logs("overload") as logs:
        if "gateway" in phases:
            overload(logs, args.seconds, args.max_in_flight)
        if "model" in phases:
            model_bound(logs, args.seconds, args.slots, args.model_cap or 2 * args.slots)
        if "drain" in phases:
            drain(logs, args.seconds)


if __name__ == "__main__":
    main()
