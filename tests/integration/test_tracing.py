"""Traces of model requests, sent by OTLP to a real Jaeger v2 and read back through its query
API: one request that fails on its model and is answered by the fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.tracing import TRACER, traced
from llmrouter.standalone import StandaloneSource
from tests.support.config import DEV_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.jaeger import Jaeger
from tests.support.serve import free_port, serving

KEY = "llmr_trace_test_key_000000000001"
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: primary}
spec:
  external: {provider: openai-compatible, baseURL: "http://127.0.0.1:DEAD/v1", model: big}
  fallbacks: [backup]
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: backup}
spec:
  external: {provider: openai-compatible, baseURL: "UPSTREAM", model: small}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  models: [primary, backup]
  apiKeys: [{name: dev, role: developer}]
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    server = Jaeger().start()
    yield server
    server.stop()


async def test_request_span_tree_in_jaeger(
    tmp_path: Path, jaeger: Jaeger, upstream: FakeUpstream
) -> None:
    text = RESOURCES.replace("DEAD", str(free_port())).replace("UPSTREAM", upstream.url)
    (tmp_path / "r.yaml").write_text(text)
    (tmp_path / "keys.yaml").write_text(f"acme:\n  dev: {KEY}\n")
    source = StandaloneSource([tmp_path / "r.yaml"], tmp_path / "keys.yaml")
    settings = GatewaySettings(otlp_endpoint=jaeger.otlp_url)
    app = create_app(settings, ConfigStore(source.load()))
    async with serving(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = await client.chat.completions.create(
            model="primary",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
    assert answer.choices[0].message.content == "hello from upstream"
    # The model server got the trace, as a child of the gateway's attempt span.
    assert upstream.seen[-1].headers["traceparent"].startswith(f"00-{TRACE_ID}-")

    deadline = time.monotonic() + 20
    spans = jaeger.trace(TRACE_ID)
    while len(spans) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        spans = jaeger.trace(TRACE_ID)
    by_name = {s["operationName"]: s for s in spans}
    assert set(by_name) == {"chat primary", "chat big", "chat small"}
    server = by_name["chat primary"]
    assert server["references"][0]["spanID"] == "00f067aa0ba902b7"  # the client's span
    tags = server["tags"]
    assert tags["gen_ai.operation.name"] == "chat"
    assert tags["gen_ai.request.model"] == "primary"
    assert tags["gen_ai.response.model"] == "backup"
    assert (tags["gen_ai.usage.input_tokens"], tags["gen_ai.usage.output_tokens"]) == (7, 5)
    assert tags["llmrouter.tenant"] == "default/acme"
    assert tags["llmrouter.attempts"] == 2
    assert "fallback->backup" in tags["llmrouter.route"]
    assert "error.type" not in tags
    failed, answered = by_name["chat big"], by_name["chat small"]
    for attempt in (failed, answered):
        assert attempt["references"][0]["spanID"] == server["spanID"]
        assert attempt["tags"]["span.kind"] == "client"
        assert attempt["tags"]["server.address"] == "127.0.0.1"
        assert attempt["tags"]["gen_ai.provider.name"] == "openai"
    assert failed["tags"]["error.type"] == "upstream_unavailable"
    assert "error.type" not in answered["tags"]
    assert upstream.seen[-1].headers["traceparent"].split("-")[2] == answered["spanID"]


async def test_no_tracing_without_an_endpoint(upstream: FakeUpstream, gateway_url: str) -> None:
    # The usual test gateway has no OTLP endpoint: no middleware, nothing propagated.
    client = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=DEV_KEY, max_retries=2)
    await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    assert "traceparent" not in upstream.seen[-1].headers


def test_sampling_at_zero_installs_nothing(source: StandaloneSource) -> None:
    settings = GatewaySettings(otlp_endpoint="http://127.0.0.1:1", trace_sample_ratio=0.0)
    app = create_app(settings, ConfigStore(source.load()))
    assert TRACER not in app and traced not in app.middlewares
    app = create_app(
        GatewaySettings(otlp_endpoint="http://127.0.0.1:1"), ConfigStore(source.load())
    )
    assert TRACER in app and traced in app.middlewares
