"""Tenant spec.audit: compiled into the gateway's tenant policy, bad values refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llmrouter.operator.api import ModelDeployment, Tenant
from llmrouter.operator.compile import Resources, compile_config


def _tenant(audit: dict[str, Any] | None) -> Tenant:
    spec: dict[str, Any] = {"models": ["m"]}
    if audit is not None:
        spec["audit"] = audit
    return Tenant.model_validate(
        {"apiVersion": "llmrouter.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"},
         "spec": spec}
    )  # fmt: skip


def _model() -> ModelDeployment:
    return ModelDeployment.model_validate(
        {"apiVersion": "llmrouter.io/v1alpha1", "kind": "ModelDeployment",
         "metadata": {"name": "m"},
         "spec": {"external": {"provider": "openai", "baseURL": "https://x.example/v1",
                               "model": "m"}}}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("audit", "prompts", "days"),
    [(None, "off", None), ({"prompts": "Hash"}, "hash", None),
     ({"prompts": "Redacted", "retentionDays": 90}, "redacted", 90)],
)  # fmt: skip
def test_spec_audit_compiles(audit: dict[str, Any] | None, prompts: str, days: int | None) -> None:
    config = compile_config(Resources(models=[_model()], tenants=[_tenant(audit)]))
    policy = config.tenants["default/t"]
    assert (policy.audit_prompts, policy.audit_retention_days) == (prompts, days)


@pytest.mark.parametrize(
    "audit", [{"prompts": "hash"}, {"prompts": "Full"}, {"retentionDays": 0}, {"keep": 1}]
)
def test_bad_spec_audit_is_refused(audit: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="audit"):
        _tenant(audit)
