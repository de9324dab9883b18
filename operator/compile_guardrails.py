"""A Tenant's spec.dataPolicy as the gateway's DataPolicy.

A pattern the gateway could not run safely (not RE2, unbounded, longer than its
maxLength) is a Problem naming its field, and leaves the whole Tenant out: a tenant must
not be served with less protection than it asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmrouter.gateway.config import DataPolicy, GuardAction, GuardRule
from llmrouter.gateway.guardrails.custom import check_pattern
from llmrouter.gateway.guardrails.detectors import NATIONAL_IDS, SECRETS
from llmrouter.operator.api.tenant import Tenant

if TYPE_CHECKING:
    from llmrouter.operator.compile import Problem

_DETECTORS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone",),
    "paymentCard": ("payment_card",),
    "iban": ("iban",),
    "nationalId": NATIONAL_IDS,
    "awsAccessKey": ("aws_access_key",),
    "privateKey": ("private_key",),
    "githubToken": ("github_token",),
    "slackToken": ("slack_token",),
    "stripeKey": ("stripe_key",),
    "openaiKey": ("openai_key",),
    "anthropicKey": ("anthropic_key",),
    "jwt": ("jwt",),
    "secrets": SECRETS,
}

_ACTIONS: dict[str, GuardAction] = {"Redact": "redact", "Block": "block", "Flag": "flag"}


def data_policy(tenant: Tenant, problems: list[Problem]) -> DataPolicy | None:
    from llmrouter.operator.compile import Problem

    spec = tenant.spec.data_policy
    if spec is None:
        return None
    rules: list[GuardRule] = []
    seen: set[str] = set()
    for d in spec.detectors:
        for name in _DETECTORS[d.type]:
            if name in seen:  # `secrets` and a single secret type: the first one given wins
                continue
            seen.add(name)
            rules.append(
                GuardRule(
                    detector=name,
                    action=_ACTIONS[d.action],
                    input=d.direction != "Output",
                    output=d.direction != "Input",
                )
            )
    for i, p in enumerate(spec.custom_patterns):
        problem = check_pattern(p.regex, p.max_length)
        if problem is not None:
            field = f"spec.dataPolicy.customPatterns[{i}].regex"
            problems.append(Problem(tenant.ref, field, f"pattern {p.name!r}: {problem}"))
            continue
        rules.append(
            GuardRule(
                detector=p.name,
                action=_ACTIONS[p.action],
                input=p.direction != "Output",
                output=p.direction != "Input",
                regex=p.regex,
                max_length=p.max_length,
            )
        )
    injection = spec.prompt_injection
    return DataPolicy(
        rules=tuple(rules),
        prompt_injection="off" if injection == "Off" else _ACTIONS[injection],
    )
