"""Gateway policy functions, tested without a server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmrouter.gateway.admission import Ask, PlanMemo, plan_admission
from llmrouter.gateway.auth import Identity, authenticate_key, presented_credential
from llmrouter.gateway.config import (
    ApiKeyEntry,
    GatewayConfig,
    Limits,
    ModelRoute,
    Pricing,
    TenantPolicy,
    Timeouts,
    Upstream,
    hash_api_key,
)
from llmrouter.gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
)
from llmrouter.gateway.openai_request import Operation, parse_request, upstream_body
from llmrouter.gateway.roles import MODELS_INVOKE
from llmrouter.gateway.routing import resolve
from llmrouter.gateway.usage import Usage

TIMEOUTS = Timeouts(connect_s=1, first_token_s=1, total_s=1)
CONFIG = GatewayConfig(
    models={
        "a": ModelRoute(
            name="a",
            source="x",
            engine="external",
            aliases=("fast",),
            upstreams=(Upstream(base_url="http://u", model="provider-a"),),
            timeouts=TIMEOUTS,
        ),
        "b": ModelRoute(
            name="b",
            source="y",
            engine="llamacpp",
            upstreams=(Upstream(base_url="http://v"),),
            timeouts=TIMEOUTS,
        ),
    },
    aliases={"fast": "a"},
    tenants={"ns/t": TenantPolicy(id="ns/t", display_name="T", models=frozenset({"a"}))},
    api_keys={
        hash_api_key("key-of-analyst-0001"): ApiKeyEntry(tenant="ns/t", name="k", role="analyst")
    },
)


def test_authenticate_finds_the_key_by_hash() -> None:
    key = presented_credential({"Authorization": "Bearer key-of-analyst-0001"})
    identity = authenticate_key(key, CONFIG)
    assert (identity.tenant.id, identity.key_name, identity.role) == ("ns/t", "k", "analyst")
    with pytest.raises(PermissionDenied):
        identity.require(MODELS_INVOKE)
    with pytest.raises(AuthenticationFailed):
        authenticate_key(presented_credential({"x-api-key": "key-of-analyst-0002"}), CONFIG)
    with pytest.raises(AuthenticationFailed):
        presented_credential({"x-api-key": "k" * 20_000})
    # made once per configuration; a new configuration makes its own
    assert authenticate_key(key, CONFIG) is identity
    assert authenticate_key(key, CONFIG.model_copy(deep=True)) is not identity
    assert CONFIG.derived.keys() == {("key", hash_api_key("key-of-analyst-0001"))}


def test_plans_are_shared_within_a_second_and_made_anew_after() -> None:
    tenant = TenantPolicy(
        id="ns/t",
        display_name="T",
        models=frozenset({"a"}),
        limits=Limits(requests_per_minute=10, tokens_per_minute=1000),
    )
    alice = Identity(tenant=tenant, key_name="a", role="user", user="key:a")
    bob = Identity(tenant=tenant, key_name="b", role="user", user="key:b")
    memo = PlanMemo()
    ask = Ask(10, 50)
    first = memo.plan(alice, ask, 1_800_000_000.1)
    assert memo.plan(alice, Ask(10, 50), 1_800_000_000.9) is first
    assert first == plan_admission(alice, ask, 1_800_000_000.9)
    assert memo.plan(alice, Ask(10, 60), 1_800_000_000.5) is not first
    assert memo.plan(bob, ask, 1_800_000_000.5) is not first
    later = memo.plan(alice, ask, 1_800_000_060.0)  # the next minute: other counters
    assert later is not first
    assert [c.key for c in later.counters] != [c.key for c in first.counters]


def test_resolve_through_alias_and_hide_other_models() -> None:
    tenant = CONFIG.tenants["ns/t"]
    resolution = resolve(CONFIG, tenant, "fast", {}, {})
    assert (resolution.route.name, resolution.steps) == ("a", ("alias fast->a",))
    with pytest.raises(ModelNotFound):
        resolve(CONFIG, tenant, "b", {}, {})


def test_body_is_forwarded_untouched_unless_something_must_change() -> None:
    raw = b'{"model": "b", "messages": [{"role": "user", "content": "hi"}]}'
    req = parse_request(Operation.CHAT, raw)
    assert upstream_body(req, CONFIG.models["b"].upstreams[0]) is raw
    renamed = upstream_body(req, CONFIG.models["a"].upstreams[0])
    assert b'"model":"provider-a"' in renamed


def test_stream_asks_upstream_for_usage_keeping_client_options() -> None:
    raw = b'{"model": "b", "prompt": "x", "stream": true, "stream_options": {"foo": 1}}'
    req = parse_request(Operation.COMPLETIONS, raw)
    assert req.stream and not req.wants_usage
    body = upstream_body(req, CONFIG.models["b"].upstreams[0])
    assert b'"stream_options":{"foo":1,"include_usage":true}' in body


def test_embeddings_cannot_stream() -> None:
    with pytest.raises(InvalidRequest, match="does not stream"):
        parse_request(Operation.EMBEDDINGS, b'{"model": "b", "input": "x", "stream": true}')


def test_cost_is_exact_decimal() -> None:
    pricing = Pricing(input_per_million_usd=Decimal("0.15"), output_per_million_usd=Decimal("0.60"))
    assert Usage(1000, 333).cost(pricing) == Decimal("0.0003498")
    assert Usage.from_openai({"prompt_tokens": "7"}) is None
    assert Usage.from_openai({"prompt_tokens": 7}) == Usage(7, 0)
