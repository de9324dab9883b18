"""GET /admin/audit: a tenant reads its own audit records, and nothing of another's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.audit.chain import new_key_pem
from llmrouter.gateway.audit.sinks import RotatingFile
from llmrouter.gateway.keys import AUDIT
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import LOCAL_MODEL
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve import serving

TENANTS = """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  models: [local]
  apiKeys:
    - {name: dev, role: developer}
    - {name: auditor, role: analyst}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: rival}
spec:
  models: [local]
  apiKeys:
    - {name: dev, role: developer}
    - {name: auditor, role: admin}
"""
KEYS = {
    ("acme", "dev"): "llmr_acme_dev_key_0000000000000001",
    ("acme", "auditor"): "llmr_acme_auditor_key_00000000002",
    ("rival", "dev"): "llmr_rival_dev_key_000000000000003",
    ("rival", "auditor"): "llmr_rival_auditor_key_0000000004",
}


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[tuple[str, Any]]:
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "all.yaml").write_text(LOCAL_MODEL + TENANTS)
    keys = "".join(
        f"{tenant}:\n  {name}: {key}\n" if name == "dev" else f"  {name}: {key}\n"
        for (tenant, name), key in KEYS.items()
    )
    (tmp_path / "keys.yaml").write_text(keys)
    private, _ = new_key_pem()
    (tmp_path / "signing.key").write_bytes(private)
    source = StandaloneSource([tmp_path / "res"], tmp_path / "keys.yaml", {"local": [upstream.url]})
    settings = GatewaySettings(
        audit_file=str(tmp_path / "audit.jsonl"),
        audit_signing_key_file=str(tmp_path / "signing.key"),
    )
    app = create_app(settings, ConfigStore(source.load()))
    async with serving(app) as url:
        yield url, app


def _auth(tenant: str, name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[tenant, name]}


async def _traffic(client: httpx.AsyncClient, app: Any) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"acme": [], "rival": []}
    chat = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    for tenant in ("acme", "rival", "acme", "acme", "rival"):
        answer = await client.post("/v1/chat/completions", json=chat, headers=_auth(tenant, "dev"))
        assert answer.status_code == 200
        ids[tenant].append(answer.headers["x-request-id"])
    # Denials of both tenants.
    for tenant in ("acme", "rival"):
        denied = await client.post(
            "/v1/chat/completions",
            json=chat,
            headers=_auth(tenant, "auditor") if tenant == "acme" else {"x-api-key": "nope"},
        )
        assert denied.status_code in (401, 403)
    writer = app[AUDIT]
    for _ in range(200):  # the records are written a moment after the answers
        if writer.queued == 0 and writer.written >= 8:
            break
        await asyncio.sleep(0.02)
    return ids


async def test_a_tenant_reads_its_own_records_only(gateway: tuple[str, Any]) -> None:
    url, app = gateway
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        ids = await _traffic(client, app)
        seen: dict[str, list[dict[str, Any]]] = {}
        for tenant in ("acme", "rival"):
            answer = await client.get("/admin/audit", headers=_auth(tenant, "auditor"))
            assert answer.status_code == 200, answer.text
            seen[tenant] = answer.json()["data"]
            assert {r["tenant"] for r in seen[tenant]} == {f"default/{tenant}"}
        acme_requests = [r["request_id"] for r in seen["acme"] if r["type"] == "request"]
        assert acme_requests == ids["acme"]
        assert [r["type"] for r in seen["acme"]].count("permission.denied") == 1
        # rival sees its own requests and its auditor's earlier admin call, nothing of acme's.
        rival_ids = {r.get("request_id") for r in seen["rival"]}
        assert set(ids["rival"]) <= rival_ids and not rival_ids & set(ids["acme"])
        assert all(r["type"] != "auth.failure" for r in seen["acme"] + seen["rival"])

        # Hostile: name acme outright, or look for its request ids and key names.
        rival = _auth("rival", "auditor")
        other = await client.get("/admin/audit?tenant=default/acme", headers=rival)
        assert other.status_code == 403
        found = await client.get(f"/admin/audit?request_id={ids['acme'][0]}", headers=rival)
        assert found.status_code == 200 and found.json()["data"] == []
        # Both tenants have a key named auditor: only rival's own denial (just above) shows.
        found = await client.get(
            "/admin/audit?user=key:auditor&type=permission.denied", headers=rival
        )
        denials = found.json()["data"]
        assert [(r["tenant"], r["path"]) for r in denials] == [("default/rival", "/admin/audit")]
        # A key without audit:read reads nothing.
        dev = await client.get("/admin/audit", headers=_auth("acme", "dev"))
        assert dev.status_code == 403


async def test_filters_and_paging(gateway: tuple[str, Any]) -> None:
    url, app = gateway
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        ids = await _traffic(client, app)
        auditor = _auth("acme", "auditor")
        pages: list[str] = []
        after = ""
        while True:
            query = f"/admin/audit?type=request&user=key:dev&limit=2{after}"
            answer = (await client.get(query, headers=auditor)).json()
            pages.extend(r["request_id"] for r in answer["data"])
            if answer["next"] is None:
                break
            after = f"&after={answer['next']}"
        assert pages == ids["acme"]
        none = await client.get("/admin/audit?from=2100-01-01T00:00:00Z", headers=auditor)
        assert none.json()["data"] == []
        for bad in ("limit=0", "from=yesterday", "after=zzz"):
            answer = await client.get(f"/admin/audit?{bad}", headers=auditor)
            assert answer.status_code == 400 and answer.json()["error"]["param"], bad


PROMPT_TENANTS = """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: hashed}
spec:
  models: [local]
  apiKeys: [{name: dev, role: developer}]
  audit: {prompts: Hash, retentionDays: 30}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: redacted}
spec:
  models: [local]
  apiKeys: [{name: dev, role: developer}]
  audit: {prompts: Redacted, retentionDays: 400}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: plain}
spec:
  models: [local]
  apiKeys: [{name: dev, role: developer}]
"""
PROMPT_KEYS = {
    "hashed": "llmr_hashed_dev_key_00000000000001",
    "redacted": "llmr_redacted_dev_key_000000000002",
    "plain": "llmr_plain_dev_key_00000000000003",
}
PROMPT = "mail jane.doe@example.com about the merger, code 7731"


async def test_tenants_choose_what_records_keep_of_prompts(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "all.yaml").write_text(LOCAL_MODEL + PROMPT_TENANTS)
    (tmp_path / "keys.yaml").write_text(
        "".join(f"{t}:\n  dev: {k}\n" for t, k in PROMPT_KEYS.items())
    )
    private, _ = new_key_pem()
    (tmp_path / "signing.key").write_bytes(private)
    source = StandaloneSource([tmp_path / "res"], tmp_path / "keys.yaml", {"local": [upstream.url]})
    log = tmp_path / "audit.jsonl"
    settings = GatewaySettings(
        audit_file=str(log),
        audit_signing_key_file=str(tmp_path / "signing.key"),
        audit_retention_days=7,
    )
    app = create_app(settings, ConfigStore(source.load()))
    chat = {"model": "local", "messages": [{"role": "user", "content": PROMPT}]}
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for tenant, key in PROMPT_KEYS.items():
            answer = await client.post(
                "/v1/chat/completions", json=chat, headers={"x-api-key": key}
            )
            assert answer.status_code == 200, (tenant, answer.text)
        writer = app[AUDIT]
        for _ in range(200):
            if writer.written >= 4 and not writer.queued:
                break
            await asyncio.sleep(0.02)
        records = {
            r["tenant"]: r
            for r in map(json.loads, log.read_bytes().splitlines())
            if r["type"] == "request"
        }
        # The longest retention anyone asked for: a tenant's 400 days over the flag's 7.
        assert isinstance(writer.file, RotatingFile) and writer.file.retention_s == 400 * 86400
    hashed, redacted, plain = (records[f"default/{t}"] for t in PROMPT_KEYS)
    assert str(hashed["prompt_hmac"]).startswith("hmac-sha256:")
    assert "prompt_redacted" not in hashed
    content = redacted["prompt_redacted"]["messages"][0]["content"]
    assert content == "mail [REDACTED:email] about the merger, code 7731"
    assert "prompt_hmac" not in plain and "prompt_redacted" not in plain
    text = log.read_text()
    assert "jane.doe" not in text and text.count("the merger") == 1


BUDGET_RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: priced}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "1000", outputPerMillion: "2000"}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: thrifty}
spec:
  models: [priced]
  budget: {monthlyUSD: "0.03", warnAtPercent: 50}
  apiKeys: [{name: dev, role: developer}]
"""
THRIFTY_KEY = "llmr_thrifty_dev_key_0000000000001"


async def test_budget_decisions_are_recorded(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "all.yaml").write_text(BUDGET_RESOURCES)
    (tmp_path / "keys.yaml").write_text(f"thrifty:\n  dev: {THRIFTY_KEY}\n")
    private, _ = new_key_pem()
    (tmp_path / "signing.key").write_bytes(private)
    source = StandaloneSource(
        [tmp_path / "res"], tmp_path / "keys.yaml", {"priced": [upstream.url]}
    )
    log = tmp_path / "audit.jsonl"
    settings = GatewaySettings(
        audit_file=str(log), audit_signing_key_file=str(tmp_path / "signing.key")
    )
    app = create_app(settings, ConfigStore(source.load()))
    chat = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    statuses = []
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(4):
            answer = await client.post(
                "/v1/chat/completions", json=chat, headers={"x-api-key": THRIFTY_KEY}
            )
            statuses.append(answer.status_code)
        writer = app[AUDIT]
        for _ in range(200):
            if not writer.queued and b"budget.refused" in log.read_bytes():
                break
            await asyncio.sleep(0.02)
    assert statuses[0] == 200 and statuses[-1] == 429
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    warning = next(r for r in records if r["type"] == "budget.warning")
    assert (warning["tenant"], warning["budget_usd"], warning["blocking"]) == (
        "default/thrifty",
        "0.03",
        True,
    )
    refused = [r for r in records if r["type"] == "budget.refused"]
    assert len(refused) == statuses.count(429) and refused[0]["tenant"] == "default/thrifty"


async def test_keys_pasted_into_paths_or_query_names_stay_out(
    gateway: tuple[str, Any], tmp_path: Path
) -> None:
    url, app = gateway
    pasted = KEYS["acme", "dev"]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path in (f"/v1/models/{pasted}", f"/v1/{pasted}"):
            refused = await client.get(path, headers={"x-api-key": "wrong"})
            assert refused.status_code == 401
        usage = await client.get(f"/admin/usage?{pasted}=1", headers=_auth("acme", "auditor"))
        assert usage.status_code == 200
        writer = app[AUDIT]
        for _ in range(200):
            if not writer.queued and writer.written >= 4:
                break
            await asyncio.sleep(0.02)
    text = (tmp_path / "audit.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["path"] for r in records if r["type"] == "auth.failure"] == [
        "/v1/models/{model}",
        "(no route)",
    ]
    assert [r["query"] for r in records if r["type"] == "admin.call"] == [["other"]]
    assert pasted not in text
