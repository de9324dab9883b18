"""Experiments through the gateway: assignment, overrides, measurement, feedback and the
admin view, tried as a user and as another tenant would; with a real Redis and in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.operator.compile import CompileError
from llmrouter.standalone import StandaloneSource
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving

MODELS = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: big}
spec:
  aliases: [chat]
  llamacpp: {model: {url: "https://example.invalid/big.gguf"}}
  pricing: {inputPerMillion: "1", outputPerMillion: "2"}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: small}
spec:
  llamacpp: {model: {url: "https://example.invalid/small.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: private}
spec:
  llamacpp: {model: {url: "https://example.invalid/private.gguf"}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  models: [big, small, chat]
  apiKeys: [{name: dev, role: developer}, {name: app, role: user}]
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: rival}
spec:
  models: [big, small, chat]
  apiKeys: [{name: dev, role: developer}]
"""
EXPERIMENT = """
apiVersion: llmrouter.io/v1alpha1
kind: Experiment
metadata: {name: cheaper}
spec:
  model: chat
  tenants: [acme]
  unit: user
  variants:
    - {name: control, model: big, weight: 50}
    - name: small
      model: small
      weight: 50
      overrides: {temperature: 0.3, systemPromptPrefix: "Be brief. "}
  control: control
  exposurePercent: 100
  metrics:
    primary: {name: feedback}
    guardrails: [{name: errorRate, margin: "0.01"}]
  analysis: {minUnitsPerVariant: 5}
"""
KEYS = {
    ("acme", "dev"): "llmr_acme_dev_key_000000000000001",
    ("acme", "app"): "llmr_acme_app_key_000000000000001",
    ("rival", "dev"): "llmr_rival_dev_key_00000000000001",
}


def write(directory: Path, *docs: str) -> tuple[Path, Path]:
    resources = directory / "resources"
    resources.mkdir(exist_ok=True)
    (resources / "all.yaml").write_text("---\n".join(docs))
    keys = directory / "keys.yaml"
    by_tenant: dict[str, dict[str, str]] = {}
    for (tenant, name), key in KEYS.items():
        by_tenant.setdefault(tenant, {})[name] = key
    keys.write_text(yaml.safe_dump(by_tenant))
    return resources, keys


@pytest.fixture(params=["memory", "redis"])
async def url(
    request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeUpstream
) -> AsyncIterator[str]:
    resources, keys = write(tmp_path, MODELS, EXPERIMENT)
    endpoints = {name: [upstream.url] for name in ("big", "small", "private")}
    source = StandaloneSource([resources], keys, endpoints)
    state_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    app = create_app(GatewaySettings(state_url=state_url), ConfigStore(source.load()))
    async with serving(app) as base:
        yield base


def auth(tenant: str, key: str = "dev") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant, key]}"}


async def chat(
    http: httpx.AsyncClient, url: str, tenant: str, user: str | None, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        body["user"] = user
    return await http.post(
        f"{url}/v1/chat/completions", json={**body, **extra}, headers=auth(tenant)
    )


async def test_users_are_split_sticky_and_the_variant_is_shown(
    url: str, upstream: FakeUpstream
) -> None:
    async with httpx.AsyncClient() as http:
        first = {}
        for i in range(40):
            resp = await chat(http, url, "acme", f"user-{i}")
            assert resp.status_code == 200
            first[i] = resp.headers["x-llmrouter-experiment"]
        for i in range(40):  # sticky
            resp = await chat(http, url, "acme", f"user-{i}")
            assert resp.headers["x-llmrouter-experiment"] == first[i]
    counts = Counter(first.values())
    assert set(counts) == {"cheaper/control", "cheaper/small"}
    # the small variant's requests carry its overrides, the control's the client's body
    overridden = [s.body for s in upstream.seen if "temperature" in s.body]
    assert len(overridden) == 2 * counts["cheaper/small"]
    for body in overridden:
        assert body["temperature"] == 0.3
        assert body["messages"][0] == {"role": "system", "content": "Be brief. "}
    assert (
        resp.headers["x-llmrouter-route"]
        == {
            "cheaper/small": "alias chat->big; experiment cheaper/small->small",
            "cheaper/control": "alias chat->big; experiment cheaper/control->big",
        }[first[39]]
    )


async def test_other_tenants_and_requests_without_a_unit_are_not_in_it(url: str) -> None:
    async with httpx.AsyncClient() as http:
        rival = await chat(http, url, "rival", "user-1")
        anonymous = await chat(http, url, "acme", None)
    for resp in (rival, anonymous):
        assert resp.status_code == 200
        assert "x-llmrouter-experiment" not in resp.headers
        assert resp.headers["x-llmrouter-model"] == "big"


async def test_feedback_once_per_request_and_only_by_its_tenant(url: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await chat(http, url, "acme", "user-7")
        rid = answer.headers["x-llmrouter-request-id"]
        feedback = f"{url}/v1/feedback"
        stolen = await http.post(
            feedback, json={"request_id": rid, "score": 5}, headers=auth("rival")
        )
        assert stolen.status_code == 404
        assert stolen.json()["error"]["code"] == "feedback_not_found"
        given = await http.post(
            feedback, json={"request_id": rid, "score": 4}, headers=auth("acme")
        )
        assert given.status_code == 200, given.text
        again = await http.post(
            feedback, json={"request_id": rid, "score": 4}, headers=auth("acme")
        )
        assert again.status_code == 404
        for bad in (
            {"request_id": rid},
            {"request_id": rid, "score": "5"},
            {"score": 1},
            {"request_id": rid, "score": True},
            {"request_id": "x" * 500, "score": 1},
        ):
            resp = await http.post(feedback, json=bad, headers=auth("acme"))
            assert resp.status_code == 400, bad
        unknown = await http.post(
            feedback, json={"request_id": "not-a-request", "score": 1}, headers=auth("acme")
        )
        assert unknown.status_code == 404
        view = await http.get(f"{url}/admin/experiments/cheaper", headers=auth("acme"))
    assert view.status_code == 200
    figures = view.json()
    variant = next(v for v in figures["variants"] if v["units"] == 1)
    assert variant["requests"] == 1
    feedback_result = [r for r in figures["results"] if r["metric"] == "feedback"]
    assert feedback_result  # the score reached the statistics


async def test_the_admin_view_shows_only_the_callers_experiments(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for i in range(12):
            await chat(http, url, "acme", f"u{i}")
        mine = await http.get(f"{url}/admin/experiments", headers=auth("acme"))
        theirs = await http.get(f"{url}/admin/experiments", headers=auth("rival"))
        probe = await http.get(f"{url}/admin/experiments/cheaper", headers=auth("rival"))
        user_role = await http.get(f"{url}/admin/experiments", headers=auth("acme", "app"))
    assert [e["name"] for e in mine.json()["data"]] == ["cheaper"]
    figures = mine.json()["data"][0]
    assert sum(v["units"] for v in figures["variants"]) == 12
    assert figures["verdict"]["decision"] in {"Running", "Inconclusive"}
    assert theirs.json()["data"] == []
    assert probe.status_code == 404
    assert user_role.status_code == 403


async def test_an_experiment_spanning_tenants_shows_neither_the_others_figures(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    shared = EXPERIMENT.replace("tenants: [acme]", "tenants: [acme, rival]")
    resources, keys = write(tmp_path, MODELS, shared)
    source = StandaloneSource([resources], keys, {n: [upstream.url] for n in ("big", "small")})
    app = create_app(GatewaySettings(), ConfigStore(source.load()))
    async with serving(app) as base, httpx.AsyncClient() as http:
        served = await chat(http, base, "rival", "someone")
        views = [
            await http.get(f"{base}/admin/experiments", headers=auth(t)) for t in ("acme", "rival")
        ]
    assert "x-llmrouter-experiment" in served.headers
    assert [v.json()["data"] for v in views] == [[], []]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"variants": [{"name": "control", "model": "big"}, {"name": "b", "model": "nope"}]},
            "spec.variants[1].model",
        ),
        (
            {"variants": [{"name": "control", "model": "big"}, {"name": "b", "model": "private"}]},
            "spec.variants[1].model",
        ),
        ({"model": "unknown-model"}, "spec.model"),
        ({"tenants": ["ghost"]}, "spec.tenants[0]"),
    ],
)
def test_a_broken_experiment_is_refused_naming_its_field(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    doc = yaml.safe_load(EXPERIMENT)
    doc["spec"].update(change)
    resources, keys = write(tmp_path, MODELS, yaml.safe_dump(doc))
    with pytest.raises(CompileError) as err:
        StandaloneSource([resources], keys, {}).load()
    assert f"Experiment default/cheaper: {field}:" in str(err.value)


def test_two_experiments_on_one_model_for_one_tenant_are_refused(tmp_path: Path) -> None:
    second = EXPERIMENT.replace("name: cheaper", "name: newer")
    resources, keys = write(tmp_path, MODELS, EXPERIMENT, second)
    with pytest.raises(CompileError) as err:
        StandaloneSource([resources], keys, {}).load()
    assert "Experiment default/newer: spec.model: model 'big' is already split" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"control": "nobody"}, "control 'nobody' is not one of the variants"),
        (
            {
                "variants": [
                    {"name": "a", "model": "big", "weight": 0},
                    {"name": "control", "model": "small", "weight": 0},
                ]
            },
            "at least one variant needs a weight above zero",
        ),
        ({"unit": "header"}, "unitHeader is required"),
        ({"exposurePercent": 120}, "exposurePercent"),
    ],
)
def test_a_malformed_experiment_is_refused_with_a_readable_message(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    doc = yaml.safe_load(EXPERIMENT)
    doc["spec"].update(change)
    resources, keys = write(tmp_path, MODELS, yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=message):
        StandaloneSource([resources], keys, {}).load()
