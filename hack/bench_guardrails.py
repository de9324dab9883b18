"""What a tenant's data policy costs: detector time per KB of prompt (every built-in
detector, the prompt-injection heuristics and a tenant pattern), the stream guard's time per
event, and time to first token through an in-process gateway with and without output
guardrails, one client, interleaved so both see the same machine.

    .venv/bin/python hack/bench_guardrails.py [--requests 300] [--smoke]

Time to first token is measured to the first event with content. The guard holds back the
word still being written (it could be the start of an e-mail address or a key), so with an
upstream that pauses between tokens the first content waits for the next token when the
first ends inside a word: the table shows that with --token-gap-ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from llmrouter.gateway.app import create_app
from llmrouter.gateway.config import DataPolicy, GuardRule
from llmrouter.gateway.guardrails.content import request_body
from llmrouter.gateway.guardrails.detectors import BUILTIN
from llmrouter.gateway.guardrails.engine import Action
from llmrouter.gateway.guardrails.policy import build
from llmrouter.gateway.guardrails.sse import StreamGuard
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource

KEYS = {
    "plain": "llmr_bench_plain_key_00000000001",
    "guarded": "llmr_bench_guard_key_00000000001",
    "secrets only": "llmr_bench_secret_key_0000000001",
}
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: a}
spec: {llamacpp: {model: {url: "https://example.invalid/a.gguf"}}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: plain}
spec: {models: [a], apiKeys: [{name: k, role: user}]}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: guarded}
spec:
  models: [a]
  apiKeys: [{name: k, role: user}]
  dataPolicy:
    detectors: [{type: email}, {type: phone}, {type: paymentCard}, {type: iban},
                {type: nationalId}, {type: secrets}]
    customPatterns: [{name: ticket, regex: 'TCK-[0-9]{6}', maxLength: 10}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: secrets-only}
spec:
  models: [a]
  apiKeys: [{name: k, role: user}]
  dataPolicy: {detectors: [{type: secrets}]}
"""

# A chat prompt, and text dense with numbers and identifiers (logs, tickets, ids): the
# number detectors cost more the more digits there are.
CHAT = (
    "I am writing to follow up on our conversation from last week about the migration plan. "
    "Could you summarise the main risks we discussed, suggest how to phase the rollout across "
    "the three regions, and draft a short note for the leadership team? Please keep the tone "
    "neutral and avoid jargon; the audience is not technical. Thanks a lot for your help! "
)
DENSE = (
    "The quarterly report shows revenue grew 12.5% to $4.2M in Q3 2024, driven by the EKS "
    "migration and lower S3 costs. Version 2.10.4 shipped on 2024-09-15; see commit "
    "9fceb02d0ae598e95dc970b74767f19372d61af8 and ticket JIRA-1234 for details.\n"
    "def handler(event):\n    return {'status': 200, "
    "'id': '550e8400-e29b-41d4-a716-446655440000'}\n"
)
PII = [
    "alice@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "AKIAIOSFODNN7EXAMPLE",
]


def prompt(size: int, rng: random.Random, base: str = CHAT) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        parts.append(base)
        if rng.random() < 0.3:
            parts.append(f"Contact: {rng.choice(PII)}. ")
    return "".join(parts)[:size]


def time_scan(n: int) -> dict[str, list[float]]:
    """µs per KB of prompt, per kind and size, through the whole input path (every
    detector, the prompt-injection heuristics and a tenant pattern)."""
    rules = (
        *(GuardRule(detector=name) for name in BUILTIN),
        GuardRule(detector="ticket", regex="TCK-[0-9]{6}", max_length=10),
    )
    guard = build("t", DataPolicy(rules=rules))
    assert guard.input is not None
    rng = random.Random(1)
    out: dict[str, list[float]] = {}
    for kind, base in (("chat", CHAT), ("dense", DENSE)):
        for size in (1024, 8192, 32768):
            times = []
            for _ in range(max(20, n * 1024 // size)):
                body = {"messages": [{"role": "user", "content": prompt(size, rng, base)}]}
                findings: Counter[tuple[str, Action]] = Counter()
                started = time.perf_counter_ns()
                request_body(body, guard.input, findings)
                times.append((time.perf_counter_ns() - started) / 1000 / (size / 1024))
            out[f"{kind}, {size // 1024} KB"] = times
    return out


def time_stream_events(n: int) -> list[float]:
    """µs per upstream event through the stream guard (a token each)."""
    rules = tuple(GuardRule(detector=name) for name in BUILTIN)
    guard = build("t", DataPolicy(rules=rules))
    assert guard.output is not None
    rng = random.Random(2)
    words = prompt(8192, rng, CHAT + DENSE).split(" ")
    times = []
    for _ in range(max(1, n // 100)):
        stream = StreamGuard(guard.output)
        for word in words:
            chunk = {"id": "x", "choices": [{"index": 0, "delta": {"content": word + " "}}]}
            event = b"data: " + orjson.dumps(chunk) + b"\n\n"
            started = time.perf_counter_ns()
            stream.event(event)
            times.append((time.perf_counter_ns() - started) / 1000)
    return times


def upstream_app(gap_s: float) -> web.Application:
    words = ["Hello", " there", ",", " here", " is", " the", " answer", "."]

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for word in words:
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "a"}
                choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
                chunk["choices"] = [choice]
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if gap_s:
                    await asyncio.sleep(gap_s)
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass  # the client stops reading at the first content
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def time_ttft(directory: Path, n: int, gap_s: float) -> dict[str, list[float]]:
    up_runner, upstream = await serve(upstream_app(gap_s))
    (directory / "r.yaml").write_text(RESOURCES)
    keys = directory / "keys.yaml"
    keys.write_text("".join(f"{t.replace(' ', '-')}:\n  k: {k}\n" for t, k in KEYS.items()))
    source = StandaloneSource([directory / "r.yaml"], keys, {"a": [f"{upstream}/v1"]})
    runner, url = await serve(create_app(GatewaySettings(), ConfigStore(source.load())))
    times: dict[str, list[float]] = {name: [] for name in KEYS}
    body = {"model": "a", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            for tenant, key in KEYS.items():
                headers = {"Authorization": f"Bearer {key}"}
                started = time.perf_counter_ns()
                first = None
                async with http.post(
                    f"{url}/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: {"):
                            delta = orjson.loads(line[6:])["choices"][0]["delta"]
                            if delta.get("content"):
                                first = time.perf_counter_ns()
                                break  # the rest of the answer is not what is measured
                assert first is not None and resp.status == 200
                times[tenant].append((first - started) / 1000)
    await runner.cleanup()
    await up_runner.cleanup()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--token-gap-ms", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true", help="a few requests, to check it runs")
    args = parser.parse_args()
    n = 20 if args.smoke else args.requests
    median = statistics.median
    scan = time_scan(n * 4)
    events = time_stream_events(n * 10)
    with tempfile.TemporaryDirectory() as tmp:
        ttft = {}
        for label, gap in (("no gap", 0.0), (f"{args.token_gap_ms:g} ms gap", args.token_gap_ms)):
            directory = Path(tmp) / label.replace(" ", "-")
            directory.mkdir()
            ttft[label] = asyncio.run(time_ttft(directory, n, gap / 1000))
    print("| what | median µs | p99 µs |")
    print("|---|---|---|")
    for kind, values in scan.items():
        print(f"| input scan per KB, {kind} | {median(values):.1f} | {_p99(values):.1f} |")
    print(f"| stream guard per event | {median(events):.1f} | {_p99(events):.1f} |")
    for label, runs in ttft.items():
        for tenant, values in runs.items():
            print(
                f"| TTFT {tenant}, upstream {label} | {median(values):.0f} | {_p99(values):.0f} |"
            )
    for label, runs in ttft.items():
        for tenant in ("guarded", "secrets only"):
            added = median(runs[tenant]) - median(runs["plain"])
            print(
                f"added TTFT at the median, {tenant}, upstream {label}: {added / 1000:.2f} ms "
                f"(n={n} each)"
            )
    return 0


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


if __name__ == "__main__":
    sys.exit(main())
