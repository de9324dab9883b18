"""A tenant's data policy, compiled once per configuration into two scanners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmrouter.gateway.config import DataPolicy, GatewayConfig, GuardRule, TenantPolicy
from llmrouter.gateway.guardrails import injection
from llmrouter.gateway.guardrails.custom import custom_detector
from llmrouter.gateway.guardrails.detectors import BUILTIN, Detector
from llmrouter.gateway.guardrails.engine import Action, Rule, Scanner

Direction = Literal["input", "output"]


@dataclass(frozen=True, eq=False)
class Guard:
    tenant: str
    input: Scanner | None
    output: Scanner | None
    invisible: Action | None
    """What invisible characters in a prompt count as (prompt-injection heuristics)."""


def guard_for(config: GatewayConfig, tenant: TenantPolicy) -> Guard | None:
    """The tenant's guard, made once per configuration; None without a data policy."""
    policy = tenant.data_policy
    if policy is None:
        return None
    key = ("guardrails", tenant.id)
    guard = config.derived.get(key)
    if guard is None:
        guard = config.derived[key] = build(tenant.id, policy)
    assert isinstance(guard, Guard)
    return guard


def detector_of(rule: GuardRule) -> Detector:
    if rule.regex is not None:
        return custom_detector(rule.detector, rule.regex, rule.max_length or 0)
    detector = BUILTIN.get(rule.detector)
    if detector is None:
        raise ValueError(f"unknown detector {rule.detector!r}")
    return detector


def build(tenant: str, policy: DataPolicy) -> Guard:
    inputs: list[Rule] = []
    outputs: list[Rule] = []
    for i, rule in enumerate(policy.rules):
        detector = detector_of(rule)
        if rule.input:
            inputs.append(Rule(detector, rule.action, i))
        if rule.output:
            outputs.append(Rule(detector, rule.action, i))
    invisible: Action | None = None
    if policy.prompt_injection != "off":
        invisible = policy.prompt_injection
        n = len(policy.rules)
        inputs.append(Rule(injection.OVERRIDE, policy.prompt_injection, n))
        inputs.append(Rule(injection.TEMPLATE, policy.prompt_injection, n + 1))
    return Guard(
        tenant,
        Scanner(tuple(inputs)) if inputs else None,
        Scanner(tuple(outputs)) if outputs else None,
        invisible,
    )
