"""spec.dataPolicy: validated by the CRD's schema, compiled into the gateway's DataPolicy,
and a pattern the gateway could not run safely refused with the field that holds it."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from llmrouter.gateway.config import GuardRule
from llmrouter.gateway.guardrails.detectors import SECRETS
from llmrouter.operator.api import Tenant
from llmrouter.operator.compile import Resources, compile_resources
from tests.unit.test_compile import md


def _tenant(policy: dict[str, Any]) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"models": ["a"], "dataPolicy": policy},
        }
    )


def test_detectors_and_patterns_compile() -> None:
    tenant = _tenant(
        {
            "detectors": [
                {"type": "email", "direction": "Input"},
                {"type": "openaiKey", "action": "Block", "direction": "Output"},
                {"type": "secrets", "action": "Flag"},
                {"type": "nationalId"},
            ],
            "customPatterns": [{"name": "ticket", "regex": r"TCK-\d{6}", "maxLength": 10}],
            "promptInjection": "Off",
        }
    )
    config, problems = compile_resources(Resources(models=[md("a")], tenants=[tenant]))
    assert problems == []
    policy = config.tenants["default/acme"].data_policy
    assert policy is not None and policy.prompt_injection == "off"
    rules = {r.detector: r for r in policy.rules}
    assert rules["email"] == GuardRule(detector="email", action="redact", output=False)
    assert rules["openai_key"] == GuardRule(detector="openai_key", action="block", input=False)
    assert set(SECRETS) <= set(rules)
    assert rules["jwt"].action == "flag"
    assert {"us_ssn", "es_dni"} <= set(rules)
    assert rules["ticket"].regex == r"TCK-\d{6}"


def test_no_policy_compiles_to_none() -> None:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"models": ["a"]},
        }
    )
    config, _ = compile_resources(Resources(models=[md("a")], tenants=[tenant]))
    assert config.tenants["default/acme"].data_policy is None


@pytest.mark.parametrize(
    ("regex", "reason"),
    [
        (r"ACME-\d+", "any length"),
        (r"(a)\1", "not a valid RE2 pattern"),
        (r"ACME-\d{1,100}", "more than maxLength 32"),
    ],
)
def test_bad_pattern_leaves_the_tenant_out_naming_the_field(regex: str, reason: str) -> None:
    tenant = _tenant({"customPatterns": [{"name": "p", "regex": regex, "maxLength": 32}]})
    config, problems = compile_resources(Resources(models=[md("a")], tenants=[tenant]))
    assert "default/acme" not in config.tenants
    [problem] = [str(p) for p in problems]
    assert "spec.dataPolicy.customPatterns[0].regex" in problem
    assert reason in problem


@pytest.mark.parametrize(
    "policy",
    [
        {"detectors": [{"type": "passport"}]},
        {"detectors": [{"type": "email", "action": "Delete"}]},
        {"customPatterns": [{"name": "p", "regex": "x", "maxLength": 5000}]},
        {"promptInjection": "Loud"},
    ],
)
def test_schema_refuses_unknown_values(policy: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        _tenant(policy)
