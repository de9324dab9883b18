from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from llmrouter.gateway.config import hash_api_key
from llmrouter.operator.api import ModelDeployment, Tenant
from llmrouter.operator.compile import (
    CompileError,
    Resources,
    compile_config,
    compile_resources,
    incumbents,
)
from llmrouter.operator.names import server_key_secret_name


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
    assert found == ["ModelDeployment default/c: spec.fallbacks[0]: fallback cycle: a → b → c → a"]


def test_fallback_to_itself_or_unknown_is_rejected() -> None:
    # Its own alias or servedName is refused with the spec; its metadata.name (the default
    # served name) only the compiler can see.
    found = problems(Resources(models=[md("a", aliases=["al"], fallbacks=["a", "zzz"])]))
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


def aged(obj: ModelDeployment, created: str) -> ModelDeployment:
    """``obj`` as the API server returns it, with its creation time."""
    data = obj.model_dump(by_alias=True, exclude_none=True)
    data["metadata"]["creationTimestamp"] = created
    return ModelDeployment.model_validate(data)


def test_a_newer_object_in_another_namespace_cannot_take_a_served_name() -> None:
    victim = aged(md("gpt-4o", namespace="team"), "2026-01-01T00:00:00Z")
    # Sorts first by namespace/name, which once decided who owned the name.
    thief = aged(md("aaa", namespace="attacker", servedName="gpt-4o"), "2026-02-01T00:00:00Z")
    config, found = compile_resources(Resources(models=[thief, victim]))
    assert config.models["gpt-4o"].source == "ModelDeployment team/gpt-4o"
    assert list(config.models) == ["gpt-4o"]
    [problem] = found
    assert problem.ref == "ModelDeployment attacker/aaa" and problem.conflict
    assert problem.left_out == "object"
    assert "already claimed by ModelDeployment team/gpt-4o" in problem.message


def test_a_newer_alias_claim_loses_the_alias_only() -> None:
    victim = aged(md("fast-one", aliases=["fast"]), "2026-01-01T00:00:00Z")
    newcomer = aged(md("a-new", aliases=["fast", "quick"]), "2026-03-01T00:00:00Z")
    config, found = compile_resources(Resources(models=[victim, newcomer]))
    assert config.aliases == {"fast": "fast-one", "quick": "a-new"}
    assert config.models["a-new"].aliases == ("quick",)
    assert [(p.ref, p.field, p.left_out, p.conflict) for p in found] == [
        ("ModelDeployment default/a-new", "spec.aliases[0]", "field", True)
    ]


def test_a_name_in_the_published_configuration_stays_with_its_holder() -> None:
    # An old, dormant object that later claims a served alias does not take it over.
    holder = aged(md("new-holder", aliases=["fast"]), "2026-03-01T00:00:00Z")
    dormant = aged(md("dormant", aliases=["fast"]), "2026-01-01T00:00:00Z")
    before = compile_config(Resources(models=[holder]))
    config, found = compile_resources(
        Resources(models=[holder, dormant], incumbents=incumbents(before))
    )
    assert config.aliases["fast"] == "new-holder"
    assert [p.ref for p in found] == ["ModelDeployment default/dormant"]
    # Without a holder, the oldest claimant wins.
    config, _ = compile_resources(Resources(models=[holder, dormant]))
    assert config.aliases["fast"] == "dormant"


def test_a_fallback_typo_drops_the_fallback_not_the_model_nor_its_tenants() -> None:
    digest = hash_api_key("a-key-of-the-tenant-1234")
    config, found = compile_resources(
        Resources(
            models=[md("a", fallbacks=["typo", "b"]), md("b")],
            tenants=[tenant("acme", ["a"], [{"name": "k"}])],
            api_key_hashes={("default/acme", "k"): digest},
        )
    )
    assert config.models["a"].fallbacks == ("b",)
    assert config.tenants["default/acme"].models == frozenset({"a"})
    assert config.api_keys[digest].tenant == "default/acme"
    assert [str(p) for p in found] == [
        "ModelDeployment default/a: spec.fallbacks[0]: unknown model 'typo'"
    ]


def test_a_tenant_naming_an_unknown_model_keeps_its_other_models_and_keys() -> None:
    digest = hash_api_key("a-key-of-the-tenant-1234")
    config, found = compile_resources(
        Resources(
            models=[md("a")],
            tenants=[tenant("acme", ["nope", "a"], [{"name": "k"}]), tenant("other", ["a"])],
            api_key_hashes={("default/acme", "k"): digest},
        )
    )
    assert config.tenants["default/acme"].models == frozenset({"a"})
    assert config.api_keys[digest].name == "k"
    assert "default/other" in config.tenants
    assert [(str(p), p.left_out) for p in found] == [
        ("Tenant default/acme: spec.models[0]: unknown model 'nope'", "field")
    ]


def test_a_model_left_out_whole_frees_its_aliases_for_others() -> None:
    old = aged(md("m"), "2026-01-01T00:00:00Z")
    # Loses its served name, so it is left out whole; its alias then goes to the next one.
    loser = aged(md("x", servedName="m", aliases=["shared"]), "2026-02-01T00:00:00Z")
    other = aged(md("y", aliases=["shared"]), "2026-03-01T00:00:00Z")
    config, found = compile_resources(Resources(models=[old, loser, other]))
    assert config.aliases == {"shared": "y"}
    assert [(p.ref, p.field) for p in found] == [("ModelDeployment default/x", "spec.servedName")]


def test_llamacpp_servers_get_the_gateway_key_in_a_cluster_only() -> None:
    local = md(
        "tiny", namespace="ml", external=None, llamacpp={"model": {"url": "https://e.com/m.gguf"}}
    )
    assert compile_config(Resources(models=[local])).models["tiny"].upstreams[0].credential is None
    config = compile_config(Resources(models=[local], model_server_keys=True))
    credential = config.models["tiny"].upstreams[0].credential
    assert credential is not None
    assert (credential.namespace, credential.key) == ("ml", "apiKey")
    assert credential.secret == server_key_secret_name("tiny")


def test_an_oidc_issuer_stays_with_the_older_tenant() -> None:
    def with_oidc(name: str, created: str) -> Tenant:
        return Tenant.model_validate(
            {
                "apiVersion": "llmrouter.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {
                    "models": ["*"],
                    "auth": {"oidc": {"issuer": "https://idp.example", "audience": "app"}},
                },
            }
        )

    victim, rogue = (
        with_oidc("victim", "2026-01-01T00:00:00Z"),
        with_oidc("a", "2026-02-01T00:00:00Z"),
    )
    config, found = compile_resources(Resources(tenants=[rogue, victim]))
    assert config.tenants["default/victim"].oidc is not None
    # The newcomer loses the identity provider only; its keys and models stay.
    assert config.tenants["default/a"].oidc is None
    assert config.tenants["default/a"].models == config.tenants["default/victim"].models
    assert [(p.ref, p.left_out, p.conflict) for p in found] == [("Tenant default/a", "field", True)]


def test_a_rotated_key_keeps_working_while_its_overlap_lasts() -> None:
    new, old = hash_api_key("llmr_new_key_after_rotation"), hash_api_key("llmr_old_key_1234567")
    res = Resources(
        models=[md("a")],
        tenants=[tenant("acme", ["a"], [{"name": "ci", "role": "developer"}])],
        api_key_hashes={("default/acme", "ci"): new},
        retiring_key_hashes={("default/acme", "ci"): old},
    )
    config = compile_config(res)
    assert config.api_keys[old] == config.api_keys[new]
    assert (config.api_keys[old].tenant, config.api_keys[old].role) == ("default/acme", "developer")
    # Once the window is over (the operator stops passing it), only the new key works.
    config = compile_config(dataclasses.replace(res, retiring_key_hashes={}))
    assert list(config.api_keys) == [new]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"aliases": ["al"], "fallbacks": ["al"]}, "cannot fall back to itself"),
        ({"servedName": "s", "fallbacks": ["s"]}, "cannot fall back to itself"),
        ({"aliases": ["x", "x"]}, "aliases: a name appears more than once"),
        ({"fallbacks": ["y", "y"]}, "fallbacks: a name appears more than once"),
    ],
)
def test_spec_refuses_what_the_crd_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        md("a", **spec)
