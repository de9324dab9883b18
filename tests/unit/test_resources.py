from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmrouter.operator.api import ModelDeployment, Tenant
from llmrouter.operator.api.common import parse_duration
from llmrouter.operator.crdgen import render_all
from llmrouter.operator.manifests import ManifestError, load_manifests

REPO = Path(__file__).resolve().parents[2]


def model_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": spec,
    }


LLAMA = {"model": {"url": "https://example.com/m.gguf"}}
EXTERNAL = {"provider": "openai", "baseURL": "https://api.openai.com/v1", "model": "gpt"}


@pytest.mark.parametrize("folder", ["crds", "charts/llmrouter/crds"])
def test_crds_in_the_repo_match_the_models(folder: str) -> None:
    for name, text in render_all().items():
        path = REPO / folder / name
        assert path.read_text() == text, f"{path} is stale: run `make crds`"


def test_crd_schema_carries_the_cross_field_rule_and_no_refs() -> None:
    text = render_all()["llmrouter.io_modeldeployments.yaml"]
    assert "has(self.llamacpp) != has(self.external)" in text
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text


def test_examples_load() -> None:
    manifests = load_manifests([REPO / "examples"])
    assert [t.metadata.name for t in manifests.tenants] == ["acme"]
    assert sorted(m.served_name for m in manifests.models) == ["gpt-4o-mini", "llama-local"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"llamacpp": LLAMA, "external": EXTERNAL}, "exactly one of llamacpp or external"),
        ({}, "exactly one of llamacpp or external"),
        ({"external": {**EXTERNAL, "provider": "cohere"}}, "Input should be 'openai'"),
        ({"external": {**EXTERNAL, "baseURL": "ftp://x"}}, "should match pattern"),
        ({"llamacpp": {"model": {}}}, "exactly one of url or pvc"),
        ({"llamacpp": {**LLAMA, "parallel": 0}}, "greater than or equal to 1"),
        ({"external": EXTERNAL, "timeouts": {"total": "ten seconds"}}, "should match pattern"),
        ({"external": EXTERNAL, "timeouts": {"total": "0s"}}, "must be greater than zero"),
        ({"external": EXTERNAL, "pricing": {"inputPerMillion": "-1"}}, "should match pattern"),
        ({"external": EXTERNAL, "typo": 1}, "Extra inputs are not permitted"),
        ({"external": {**EXTERNAL, "provider": "azure-openai"}}, "azure-openai needs apiVersion"),
        ({"external": {**EXTERNAL, "apiVersion": "latest"}}, "should match pattern"),
    ],
)
def test_invalid_model_deployments_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ModelDeployment.model_validate(model_doc(spec))
    assert message in str(err.value)


def test_tenant_needs_models_and_unique_key_names() -> None:
    base = {"apiVersion": "llmrouter.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"}}
    with pytest.raises(ValidationError, match="at least 1 item"):
        Tenant.model_validate({**base, "spec": {"models": []}})
    with pytest.raises(ValidationError, match="appears more than once"):
        Tenant.model_validate(
            {**base, "spec": {"models": ["a"], "apiKeys": [{"name": "k"}, {"name": "k"}]}}
        )
    with pytest.raises(ValidationError, match="Input should be 'admin'"):
        Tenant.model_validate(
            {**base, "spec": {"models": ["a"], "apiKeys": [{"name": "k", "role": "root"}]}}
        )


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2s", 2), ("1m30s", 90), ("1h", 3600), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_manifest_errors_name_file_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: llmrouter.io/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\n"
        "spec: {models: [x], apiKeys: [{name: k, role: root}]}\n"
        "---\napiVersion: llmrouter.io/v1beta9\nkind: Tenant\nmetadata: {name: b}\n"
        "---\napiVersion: llmrouter.io/v1alpha1\nkind: Gadget\nmetadata: {name: c}\n"
        "---\n- just a list\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n"
    )
    (tmp_path / "b.yaml").write_text("key: [unclosed\n")
    with pytest.raises(ManifestError) as err:
        load_manifests([tmp_path])
    messages = err.value.messages
    assert messages[0].startswith(
        f"{tmp_path}/a.yaml (document 1): Tenant acme: spec.apiKeys[0].role: Input should be"
    )
    assert "apiVersion 'llmrouter.io/v1beta9' is not served" in messages[1]
    assert "unknown kind 'Gadget'" in messages[2]
    assert "expected a Kubernetes object" in messages[3]
    assert messages[4].startswith(f"{tmp_path}/b.yaml: not valid YAML")
    assert len(messages) == 5


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: llmrouter.io/v1alpha1\nkind: Tenant\nmetadata: {name: a}\n"
        "spec: {models: [x]}\nspec: {models: [y]}\n"
    )
    with pytest.raises(ManifestError, match="found duplicate key 'spec'"):
        load_manifests([tmp_path])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"limits": {"requestsPerMinute": 0}}, "greater than or equal to 1"),
        ({"limits": {"tokensPerMonth": -5}}, "greater than or equal to 1"),
        ({"limits": {"maxConcurrent": "many"}}, "valid integer"),
        ({"budget": {"monthlyUSD": "0"}}, "monthlyUSD must be greater than zero"),
        ({"budget": {"monthlyUSD": "-3"}}, "should match pattern"),
        ({"budget": {"monthlyUSD": "5", "onExceeded": "Panic"}}, "'Block' or 'Alert'"),
        ({"budget": {"monthlyUSD": "5", "warnAtPercent": 120}}, "less than or equal to 100"),
        ({"auth": {"oidc": {"issuer": "not a url", "audience": "x"}}}, "should match pattern"),
        (
            {"auth": {"oidc": {"issuer": "https://i", "audience": "x", "roles": {"g": "root"}}}},
            "Input should be 'admin'",
        ),
        (
            {"apiKeys": [{"name": "k", "limits": {"requestsPerDay": 0}}]},
            "greater than or equal to 1",
        ),
    ],
)
def test_impossible_tenant_limits_are_refused(spec: dict[str, Any], message: str) -> None:
    doc = {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "t"},
        "spec": {"models": ["a"], **spec},
    }
    with pytest.raises(ValidationError) as err:
        Tenant.model_validate(doc)
    assert message in str(err.value)


def test_tenant_crd_has_budget_rule_and_limit_minimums() -> None:
    text = render_all()["llmrouter.io_tenants.yaml"]
    assert "double(self.monthlyUSD) > 0.0" in text
    assert "requestsPerMinute:" in text and "minimum: 1" in text
