from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from llmrouter.gateway.config import hash_api_key
from llmrouter.operator.api import ModelDeployment, Tenant
from llmrouter.operator.compile import CompileError, Resources, compile_config


def md(name: str, namespace: str = "default", **spec: Any) -> ModelDeployment:
    spec.setdefault(
        "external", {"provider": "openai", "baseURL": "https://api.example.com/v1", "model": name}
    )
    return ModelDeployment.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def tenant(name: str, models: list[str], keys: list[dict[str, str]] | None = None) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"models": models, "apiKeys": keys or []},
        }
    )


def problems(resources: Resources) -> list[str]:
    with pytest.raises(CompileError) as err:
        compile_config(resources)
    return [str(p) for p in err.value.problems]


def test_compiles_models_aliases_tenants_and_key_hashes() -> None:
    res = Resources(
        models=[
            md("a", aliases=["fast"], pricing={"inputPerMillion": "0.15"}),
            md("b", fallbacks=["a"]),
        ],
        tenants=[tenant("acme", ["fast"], [{"name": "ci", "role": "developer"}])],
        api_key_hashes={("default/acme", "ci"): hash_api_key("secret-key-123456")},
    )
    config = compile_config(res)
    assert sorted(config.models) == ["a", "b"]
    assert config.aliases == {"fast": "a"}
    assert config.resolve("fast") is config.models["a"]
    assert config.models["a"].pricing.input_per_million_usd == Decimal("0.15")
    assert config.models["b"].fallbacks == ("a",)
    assert config.tenants["default/acme"].models == frozenset({"a"})
    entry = config.api_keys[hash_api_key("secret-key-123456")]
    assert (entry.tenant, entry.name, entry.role) == ("default/acme", "ci", "developer")
    assert "secret-key-123456" not in config.model_dump_json()


def test_output_is_deterministic_whatever_the_input_order() -> None:
    models = [md("a", aliases=["x"]), md("b"), md("c", aliases=["y"])]
    tenants = [tenant("t1", ["*"]), tenant("t2", ["a", "y"])]
    first = compile_config(Resources(models=models, tenants=tenants))
    second = compile_config(Resources(models=models[::-1], tenants=tenants[::-1]))
    assert first.model_dump_json() == second.model_dump_json()
    assert first.fingerprint() == second.fingerprint()


def test_llamacpp_model_defaults_to_its_service_and_takes_endpoint_overrides() -> None:
    local = md(
        "tiny",
        namespace="ml",
        external=None,
        llamacpp={"model": {"url": "https://example.com/m.gguf"}},
    )
    config = compile_config(Resources(models=[local]))
    assert config.models["tiny"].upstreams[0].base_url == "http://tiny.ml.svc:8080/v1"
    config = compile_config(
        Resources(
            models=[local], endpoints={"tiny": ["http://127.0.0.1:1/v1/", "http://127.0.0.1:2/v1"]}
        )
    )
    assert [u.base_url for u in config.models["tiny"].upstreams] == [
        "http://127.0.0.1:1/v1",
        "http://127.0.0.1:2/v1",
    ]


def test_tenant_naming_an_unknown_model_is_rejected() -> None:
    assert problems(Resources(models=[md("a")], tenants=[tenant("acme", ["a", "nope"])])) == [
        "Tenant default/acme: spec.models[1]: unknown model 'nope'"
    ]


def test_two_models_claiming_one_name_are_rejected() -> None:
    found = problems(Resources(models=[md("a", aliases=["fast"]), md("b", aliases=["fast"])]))
    assert found == [
        "ModelDeployment default/b: spec.aliases[0]: model name 'fast' is already claimed by "
        "ModelDeployment default/a"
    ]
    found = problems(Resources(models=[md("a"), md("x", servedName="a")]))
    assert found == [
        "ModelDeployment default/x: spec.servedName: model name 'a' is already claimed by "
        "ModelDeployment default/a"
    ]


def test_same_name_in_two_namespaces_is_rejected() -> None:
    assert len(problems(Resources(models=[md("a"), md("a", namespace="other")]))) == 1


def test_fallback_cycle_is_rejected() -> None:
    found = problems(
        Resources(
            models=[md("a", fallbacks=["b"]), md("b", fallbacks=["c"]), md("c", fallbacks=["a"])]
        )
    )
    assert found == ["ModelDeployment default/a: spec.fallbacks: fallback cycle: a → b → c → a"]


def test_fallback_to_itself_or_unknown_is_rejected() -> None:
    found = problems(Resources(models=[md("a", aliases=["al"], fallbacks=["al", "zzz"])]))
    assert found == [
        "ModelDeployment default/a: spec.fallbacks[0]: a model cannot fall back to itself",
        "ModelDeployment default/a: spec.fallbacks[1]: unknown model 'zzz'",
    ]


def test_duplicate_objects_and_shared_key_secrets_are_rejected() -> None:
    digest = hash_api_key("same-key-for-both-1234")
    found = problems(
        Resources(
            models=[md("a")],
            tenants=[
                tenant("t1", ["a"], [{"name": "k"}]),
                tenant("t2", ["a"], [{"name": "k"}]),
                tenant("t2", ["a"]),
            ],
            api_key_hashes={("default/t1", "k"): digest, ("default/t2", "k"): digest},
        )
    )
    assert "Tenant default/t2: metadata.name: defined more than once" in found
    assert (
        "Tenant default/t2: spec.apiKeys[0]: key 'k' has the same secret as default/t1/k" in found
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        Resources(
            models=[md("a", fallbacks=["nope"]), md("b", aliases=["a"])],
            tenants=[tenant("acme", ["ghost"])],
        )
    )
    assert len(found) == 3


def test_wildcard_allows_every_model() -> None:
    config = compile_config(Resources(models=[md("a"), md("b")], tenants=[tenant("t", ["*"])]))
    assert config.tenants["default/t"].models == frozenset({"a", "b"})


def test_two_tenants_sharing_an_oidc_issuer_and_audience_are_rejected() -> None:
    def with_oidc(name: str, issuer: str, audience: str, **extra: str) -> Tenant:
        return Tenant.model_validate(
            {
                "apiVersion": "llmrouter.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {
                    "models": ["*"],
                    "auth": {"oidc": {"issuer": issuer, "audience": audience, **extra}},
                },
            }
        )

    # Tenants are taken in id order: the first keeps the pair, whatever the input order.
    owner = with_oidc("acme", "https://idp.example", "llmrouter")
    rogue = with_oidc("zeta", "https://idp.example/", "llmrouter", jwksURL="https://x/jwks")
    other_audience = with_oidc("other", "https://idp.example", "other-app")
    assert problems(Resources(tenants=[rogue, owner, other_audience])) == [
        "Tenant default/zeta: spec.auth.oidc: issuer 'https://idp.example' with audience "
        "'llmrouter' is already Tenant default/acme's"
    ]
