"""The operator's compile step around the pure compiler: what it reads from Secrets and
how it reports, with the Kubernetes calls replaced by what a cluster would answer."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from llmrouter.gateway.config import hash_api_key
from llmrouter.operator import kube
from llmrouter.operator.api import Tenant
from llmrouter.operator.compile import Problem, Resources
from llmrouter.operator.controllers import compiler
from llmrouter.operator.controllers.conditions import condition, merged


def tenant(name: str, keys: list[str]) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"models": ["*"], "apiKeys": [{"name": k} for k in keys]},
        }
    )


def key_secret(tenant: str, key: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"s-{tenant}-{key}",
            "namespace": "team",
            "labels": {"llmrouter.io/tenant": tenant, "llmrouter.io/api-key": key},
        },
        "data": data,
    }


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_broken_key_secret_leaves_out_that_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = [
        key_secret("acme", "good", {"apiKey": b64(b"llmr_good_key_0000000")}),
        key_secret("acme", "empty", {"other": b64(b"x")}),
        key_secret("acme", "binary", {"apiKey": b64(b"\xff\xfe")}),
        key_secret("gone", "k", {"apiKey": b64(b"llmr_orphan_key_00000")}),
    ]
    monkeypatch.setattr(kube, "list_objects", lambda *a, **kw: secrets)
    read = compiler.Read(Resources())
    hashes = compiler._key_hashes([tenant("acme", ["good", "empty", "binary"])], read)
    problems = read.problems
    assert hashes == {("team/acme", "good"): hash_api_key("llmr_good_key_0000000")}
    assert sorted((p.ref, p.field, p.left_out) for p in problems) == [
        ("Tenant team/acme", "spec.apiKeys[binary]", "field"),
        ("Tenant team/acme", "spec.apiKeys[empty]", "field"),
    ]
    assert "s-acme-empty has no apiKey" in " ".join(p.message for p in problems)


def test_key_secrets_of_a_long_tenant_name_are_found_by_their_hashed_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmrouter.operator.render import render_api_key_secret

    long = tenant("t" * 200, ["k"])
    secret = render_api_key_secret("team", long.metadata.name, "k", "llmr_long_tenant_key_0")
    monkeypatch.setattr(kube, "list_objects", lambda *a, **kw: [secret])
    hashes = compiler._key_hashes([long], compiler.Read(Resources()))
    assert hashes == {(long.tenant_id, "k"): hash_api_key("llmr_long_tenant_key_0")}


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    old = condition("Compiled", True, "Compiled")
    old["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    ready = condition("Ready", True, "Available")
    again = merged([old, ready], condition("Compiled", True, "Compiled"))
    assert again == [old, ready]  # equal: no write is needed
    flipped = merged([old, ready], condition("Compiled", False, "LeftOut", "x"))
    assert flipped[0]["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert flipped[1] == ready  # another writer's condition stays


def test_report_writes_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[str, dict[str, Any], str | None]] = []

    def patch_status(
        api_version: str,
        kind: str,
        name: str,
        namespace: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        writes.append((name, status, resource_version))

    monkeypatch.setattr(kube, "patch_status", patch_status)
    md = {
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team", "generation": 1, "resourceVersion": "7"},
    }
    conflict = Problem("ModelDeployment team/m", "spec.aliases[0]", "taken", "field", True)
    compiler.report({"ModelDeployment team/m": md}, [conflict])
    [(name, status, version)] = writes
    assert name == "m"
    assert version == "7"  # not over a newer write of another condition
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["Compiled"]["status"], by_type["Compiled"]["reason"]) == (
        "False",
        "PartlyLeftOut",
    )
    assert (by_type["Conflict"]["status"], by_type["Conflict"]["reason"]) == (
        "True",
        "ClaimedByAnother",
    )
    assert by_type["Conflict"]["message"] == "spec.aliases[0]: taken"
    written = {**md, "status": status}
    compiler.report({"ModelDeployment team/m": written}, [conflict])
    assert len(writes) == 1  # nothing changed, nothing written
    compiler.report({"ModelDeployment team/m": written}, [])
    assert {c["type"]: c["status"] for c in writes[-1][1]["conditions"]} == {
        "Compiled": "True",
        "Conflict": "False",
    }


def test_operator_replicas_get_distinct_priorities_the_earliest_highest() -> None:
    from llmrouter.operator.peering import peering_priority

    first, later = peering_priority(1_800_000_000, 999_999), peering_priority(1_800_000_001, 0)
    assert first > later
    # Same second: the random part still tells them apart.
    assert peering_priority(1_800_000_000, 1) != peering_priority(1_800_000_000, 2)
    assert 0 < later < 2**63  # a Kubernetes integer


def test_a_standby_replica_leaves_compiling_to_the_live_one_above_it() -> None:
    import datetime

    now = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
    peering = {
        "status": {
            "leader@1": {"priority": 20, "lifetime": 30, "lastseen": "2026-06-01T11:59:50+00:00"},
            "old@2": {"priority": 99, "lifetime": 30, "lastseen": "2026-06-01T11:00:00+00:00"},
        }
    }
    assert compiler.outranked(peering, 10, now)
    assert not compiler.outranked(peering, 20, now)  # itself, or below: active
    # Once the leader's lifetime runs out without a keep-alive, the standby takes over.
    assert not compiler.outranked(peering, 10, now + datetime.timedelta(seconds=21))
    assert not compiler.outranked(None, 10, now)


def test_a_rotated_key_is_retiring_until_its_window_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    def rotated(until: datetime.datetime) -> dict[str, Any]:
        secret = key_secret("acme", "ci", {"apiKey": b64(b"llmr_new_key_00000000000")})
        secret["metadata"]["annotations"] = {
            "llmrouter.io/previous-key-sha256": hash_api_key("llmr_old_key_0000000000"),
            "llmrouter.io/previous-key-until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return secret

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    later = now + datetime.timedelta(minutes=5)
    monkeypatch.setattr(kube, "list_objects", lambda *a, **kw: [rotated(later)])
    read = compiler.Read(Resources())
    compiler._key_hashes([tenant("acme", ["ci"])], read)
    assert read.retiring == {("team/acme", "ci"): hash_api_key("llmr_old_key_0000000000")}
    assert read.next_expiry == later  # the compile loop wakes then
    past = now - datetime.timedelta(seconds=1)
    monkeypatch.setattr(kube, "list_objects", lambda *a, **kw: [rotated(past)])
    read = compiler.Read(Resources())
    compiler._key_hashes([tenant("acme", ["ci"])], read)
    assert read.retiring == {} and read.next_expiry is None


def test_a_kind_whose_crd_is_missing_does_not_stop_the_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    def list_objects(api_version: str, kind: str, *_: Any, **__: Any) -> list[dict[str, Any]]:
        if kind == "Experiment":
            raise ResourceNotFoundError(f"No matches found for {kind}")
        if kind == "Tenant":
            return [tenant("acme", []).model_dump(by_alias=True, exclude_none=True)]
        return []

    monkeypatch.setattr(kube, "list_objects", list_objects)
    monkeypatch.setattr(kube, "get", lambda *a, **kw: None)
    read = compiler.read_resources()
    assert [t.tenant_id for t in read.resources.tenants] == ["team/acme"]
    assert read.resources.experiments == []


def provider_model(name: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "external": {
                "provider": "openai",
                "baseURL": "https://api.openai.com/v1",
                "model": "gpt-4o",
                "apiKeySecretRef": {"name": secret, "key": "apiKey"},
            }
        },
    }


def test_a_provider_key_is_compiled_and_copied_only_when_its_secret_consents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmrouter.operator import settings

    consenting: dict[str, Any] = {
        "metadata": {
            "name": "ours",
            "namespace": "team",
            "labels": {"llmrouter.io/provider-credential": "true"},
        },
        "data": {"apiKey": b64(b"sk-ours")},
    }
    # Another team's key: a ModelDeployment may name it, but it never leaves the namespace.
    theirs = {"metadata": {"name": "theirs", "namespace": "team"}, "data": {"apiKey": b64(b"sk-x")}}
    secrets = {"ours": consenting, "theirs": theirs}
    models = [provider_model("good", "ours"), provider_model("stolen", "theirs")]

    def list_objects(api_version: str, kind: str, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return models if kind == "ModelDeployment" else []

    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "list_objects", list_objects)
    monkeypatch.setattr(kube, "get", lambda _v, kind, name, ns: secrets.get(name))
    monkeypatch.setattr(kube, "apply", applied.append)
    monkeypatch.setattr(kube, "delete", lambda *a, **kw: None)
    monkeypatch.setattr(settings, "current", lambda: settings.OperatorSettings(namespace="gw"))
    read = compiler.read_resources()
    assert [m.metadata.name for m in read.resources.models] == ["good"]
    assert [(p.ref, p.field, p.left_out) for p in read.problems] == [
        ("ModelDeployment team/stolen", "spec.external.apiKeySecretRef", "object")
    ]
    assert "kubectl label secret theirs llmrouter.io/provider-credential=true" in (
        read.problems[0].message
    )
    compiler.copy_secrets(read.resources)
    assert [c["metadata"]["annotations"]["llmrouter.io/source-name"] for c in applied] == ["ours"]
    # The label taken off after the compile read it: the copy step does not copy either.
    applied.clear()
    del consenting["metadata"]["labels"]
    compiler.copy_secrets(read.resources)
    assert applied == []


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("https://api.openai.com/v1", True),
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost/v1", True),
        ("http://api.attacker.example/v1", False),
        ("http://localhost.attacker.example/v1", False),
        ("http://127.0.0.1@attacker.example/v1", False),
    ],
)
def test_a_provider_key_goes_over_https_only(base_url: str, allowed: bool) -> None:
    from pydantic import ValidationError

    from llmrouter.operator.api import ModelDeployment

    body = provider_model("m", "ours")
    body["spec"]["external"]["baseURL"] = base_url
    if allowed:
        ModelDeployment.model_validate(body)
        return
    with pytest.raises(ValidationError, match="apiKeySecretRef needs an https baseURL"):
        ModelDeployment.model_validate(body)
    del body["spec"]["external"]["apiKeySecretRef"]
    ModelDeployment.model_validate(body)  # without a key, http is the operator's choice
