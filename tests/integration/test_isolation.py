"""Two tenants in two namespaces: every gateway route, tried by each with what belongs to the
other (its models and aliases, its tenant name, its request ids), with an API key and with an
OIDC token. Each is refused, or answers with nothing of the other."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.fake_upstream import FakeUpstream, UpstreamThread
from tests.support.oidc import ROGUE_KEY, RSA_KEY, Issuer, serving_issuer
from tests.support.serve import serving

RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: model-a, namespace: team-a}
spec:
  aliases: [alias-a]
  llamacpp: {model: {url: "https://example.invalid/a.gguf"}}
  timeouts: {connect: 1s, firstToken: 2s, total: 5s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: model-b, namespace: team-b}
spec:
  aliases: [alias-b]
  llamacpp: {model: {url: "https://example.invalid/b.gguf"}}
  timeouts: {connect: 1s, firstToken: 2s, total: 5s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: shared, namespace: platform}
spec:
  llamacpp: {model: {url: "https://example.invalid/s.gguf"}}
  timeouts: {connect: 1s, firstToken: 2s, total: 5s}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: alpha, namespace: team-a}
spec:
  models: [model-a, shared]
  apiKeys: [{name: admin, role: admin}]
  auth:
    oidc: {issuer: ISSUER, audience: alpha, roles: {alpha-admins: admin}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: beta, namespace: team-b}
spec:
  models: [model-b, shared]
  apiKeys: [{name: admin, role: admin}]
  auth:
    oidc: {issuer: ISSUER, audience: beta, roles: {beta-admins: admin}}
"""

KEYS = {"alpha": "llmr_isolation_alpha_admin_key_01", "beta": "llmr_isolation_beta_admin_key_002"}
TENANT_IDS = {"alpha": "team-a/alpha", "beta": "team-b/beta"}
OWN = {"alpha": ("model-a", "alias-a"), "beta": ("model-b", "alias-b")}
OTHER = {"alpha": "beta", "beta": "alpha"}


@dataclass
class World:
    url: str
    issuer: Issuer
    servers: dict[str, FakeUpstream]
    """Where each tenant's own model runs; ``shared`` for the model both may use."""

    def credential(self, tenant: str, kind: str) -> str:
        if kind == "key":
            return KEYS[tenant]
        return self.issuer.token(RSA_KEY, aud=tenant, groups=[f"{tenant}-admins"])

    def client(self, tenant: str, kind: str, **headers: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1",
            api_key=self.credential(tenant, kind),
            max_retries=0,
            default_headers=headers or None,
        )

    async def get(self, tenant: str, kind: str, path: str, **headers: str) -> httpx.Response:
        return await self.get_with(self.credential(tenant, kind), path, **headers)

    async def get_with(self, credential: str, path: str, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {credential}"}
        async with httpx.AsyncClient() as http:
            return await http.get(f"{self.url}{path}", headers={**auth, **headers})

    def seen(self) -> int:
        return sum(len(s.seen) for s in self.servers.values())


@contextlib.contextmanager
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    threads = {name: UpstreamThread() for name in ("alpha", "beta", "shared")}
    try:
        yield {name: thread.start() for name, thread in threads.items()}
    finally:
        for thread in threads.values():
            thread.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeUpstream]]:
    with upstreams() as found:
        yield found


@pytest.fixture
async def world(tmp_path: Path, servers: dict[str, FakeUpstream]) -> AsyncIterator[World]:
    for server in servers.values():
        server.reset()
    async with serving_issuer(("rsa-1", RSA_KEY)) as issuer:
        (tmp_path / "r.yaml").write_text(RESOURCES.replace("ISSUER", issuer.url))
        keys = "".join(f"{TENANT_IDS[t]}:\n  admin: {k}\n" for t, k in KEYS.items())
        (tmp_path / "keys.yaml").write_text(keys)
        endpoints = {
            "model-a": [servers["alpha"].url],
            "model-b": [servers["beta"].url],
            "shared": [servers["shared"].url],
        }
        source = StandaloneSource([tmp_path / "r.yaml"], tmp_path / "keys.yaml", endpoints)
        app = create_app(GatewaySettings(), ConfigStore(source.load()))
        async with serving(app) as url:
            yield World(url, issuer, servers)


MATRIX = pytest.mark.parametrize(
    ("me", "kind"),
    [("alpha", "key"), ("alpha", "token"), ("beta", "key"), ("beta", "token")],
)
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _call(client: openai.AsyncOpenAI, route: str, model: str) -> Any:
    if route == "chat":
        return await client.chat.completions.create(model=model, messages=CHAT)
    if route == "chat-stream":
        stream = await client.chat.completions.create(model=model, messages=CHAT, stream=True)
        return [chunk async for chunk in stream]
    if route == "completions":
        return await client.completions.create(model=model, prompt="hi", max_tokens=2)
    return await client.embeddings.create(model=model, input="hi")


@MATRIX
@pytest.mark.parametrize("route", ["chat", "chat-stream", "completions", "embeddings"])
async def test_the_other_tenants_models_are_unknown(
    world: World, me: str, kind: str, route: str
) -> None:
    other = OTHER[me]
    client = world.client(me, kind)
    refusals = []
    for model in (*OWN[other], "no-such-model"):
        with pytest.raises(openai.NotFoundError) as err:
            await _call(client, route, model)
        assert err.value.code == "model_not_found"
        refusals.append(err.value.message.replace(model, "NAME"))
    # Another tenant's model is answered exactly like one that does not exist.
    assert len(set(refusals)) == 1
    assert world.seen() == 0
    # while its own models answer
    for model in OWN[me]:
        await _call(client, route, model)
    assert world.servers[me].seen and not world.servers[other].seen


@MATRIX
async def test_models_list_and_get_show_only_the_tenants_own(
    world: World, me: str, kind: str
) -> None:
    client = world.client(me, kind)
    assert sorted(m.id for m in (await client.models.list()).data) == sorted([*OWN[me], "shared"])
    for model in OWN[OTHER[me]]:
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve(model)
    assert (await client.models.retrieve(OWN[me][1])).id == OWN[me][1]


@MATRIX
async def test_usage_is_the_callers_tenants_alone(world: World, me: str, kind: str) -> None:
    other = OTHER[me]
    for model in (*OWN[other], "shared"):  # the other tenant's traffic
        await world.client(other, "key").chat.completions.create(model=model, messages=CHAT)
    await world.client(me, kind).chat.completions.create(model="shared", messages=CHAT)
    report = await world.get(me, kind, "/admin/usage", **{"x-llmrouter-tenant": TENANT_IDS[me]})
    assert report.status_code == 200, report.text
    assert report.json()["tenant"] == TENANT_IDS[me]
    assert report.json()["total"]["requests"] == 1
    assert [g["model"] for g in report.json()["groups"]] == ["shared"]
    refused = await world.get(me, kind, f"/admin/usage?tenant={TENANT_IDS[other]}")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert TENANT_IDS[other] not in refused.text.replace(f"tenant={TENANT_IDS[other]}", "")


@MATRIX
async def test_endpoints_show_only_the_servers_of_the_tenants_models(
    world: World, me: str, kind: str
) -> None:
    other = OTHER[me]
    answer = await world.get(me, kind, "/admin/endpoints")
    assert answer.status_code == 200, answer.text
    shown = {(e["model"], e["url"]) for e in answer.json()["endpoints"]}
    assert shown == {
        (OWN[me][0], world.servers[me].url),
        ("shared", world.servers["shared"].url),
    }
    assert OWN[other][0] not in answer.text and world.servers[other].url not in answer.text


async def test_a_token_cannot_name_the_other_tenant(world: World) -> None:
    for me in ("alpha", "beta"):
        token = world.credential(me, "token")
        for named in (TENANT_IDS[OTHER[me]], "nobody/none"):
            answer = await world.get_with(token, "/v1/models", **{"x-llmrouter-tenant": named})
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["code"] == "permission_denied"
        # Groups of the other tenant in a token for this one give nothing there either.
        token = world.issuer.token(RSA_KEY, aud=me, groups=[f"{OTHER[me]}-admins"])
        answer = await world.get_with(token, "/v1/models")
        assert answer.status_code == 403
        # A forged token is 401 whichever tenant it names: no probing who trusts the issuer.
        forged = world.issuer.token(ROGUE_KEY, kid="rsa-1", aud=me)
        for named in (TENANT_IDS[me], TENANT_IDS[OTHER[me]], "nobody/none"):
            answer = await world.get_with(forged, "/v1/models", **{"x-llmrouter-tenant": named})
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["message"] == "token signature invalid"


@pytest.mark.parametrize("me", ["alpha", "beta"])
async def test_a_key_ignores_the_tenant_header(world: World, me: str) -> None:
    header = {"x-llmrouter-tenant": TENANT_IDS[OTHER[me]]}
    answer = await world.get(me, "key", "/admin/usage", **header)
    assert answer.status_code == 200
    assert answer.json()["tenant"] == TENANT_IDS[me]


@MATRIX
async def test_cached_answers_and_request_ids_never_cross(world: World, me: str, kind: str) -> None:
    other = OTHER[me]
    request_id = f"req-of-{other}"
    body: dict[str, Any] = {"model": "shared", "messages": CHAT, "temperature": 0}
    theirs = world.client(other, "key", **{"x-request-id": request_id})
    for _ in range(2):
        raw = await theirs.chat.completions.with_raw_response.create(**body)
    assert raw.headers["x-llmrouter-cache"] == "hit"  # the other tenant's answer is cached
    assert len(world.servers["shared"].seen) == 1
    # The same body and the same request id, from this tenant: a miss, its own answer.
    mine = world.client(me, kind, **{"x-request-id": request_id})
    raw = await mine.chat.completions.with_raw_response.create(**body)
    assert raw.headers.get("x-llmrouter-cache") != "hit"
    assert raw.headers["x-request-id"] == request_id
    assert len(world.servers["shared"].seen) == 2
    report = (await world.get(me, kind, "/admin/usage")).json()
    assert report["total"]["requests"] == 1
