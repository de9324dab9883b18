"""Which variant of an experiment a unit gets: deterministic, sticky, the same in every
process and replica, plain Python.

Two keyed BLAKE2b hashes of the unit, never Python's ``hash()`` (salted per process):
- one decides exposure (``u < exposurePercent``), so raising the percentage only adds units;
- one per variant decides the variant by weighted rendezvous hashing (the variant with the
  largest ``-weight / ln(u_variant)`` wins), so changing weights moves the fewest units, each
  toward a variant that grew.
The hashes depend on the experiment and the unit only, not on the split: a new split starts
a new analysis epoch, while every unit keeps what the properties above allow it to keep.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrouter.gateway.config import (
    ExperimentPolicy,
    ExperimentVariant,
    GatewayConfig,
)
from llmrouter.gateway.state import keys as k

_TWO_64 = float(2**64)
EXPERIMENT_HEADER = "x-llmrouter-experiment"
TRIAL_TTL_S = 90 * 86400
"""How long an experiment's statistics outlive its last request."""


def uniform(experiment: str, purpose: str, unit: str) -> float:
    """A number in (0, 1), uniform over units, from a hash of the unit keyed by the
    experiment: another experiment's assignments are independent of this one's."""
    key = hashlib.sha256(experiment.encode()).digest()
    data = f"{purpose}\x1f{unit}".encode()
    digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


def exposed(policy: ExperimentPolicy, unit: str) -> bool:
    return uniform(policy.id, "exposure", unit) * 100 < policy.exposure_percent


def variant_of(policy: ExperimentPolicy, unit: str) -> ExperimentVariant:
    """The unit's variant among those with a weight (weighted rendezvous hashing)."""
    best, best_score = policy.variants[0], -math.inf
    for v in policy.variants:
        if v.weight <= 0:
            continue
        score = -v.weight / math.log(uniform(policy.id, "variant:" + v.name, unit))
        if score > best_score:
            best, best_score = v, score
    return best


def experiment_for(config: GatewayConfig, tenant: str, model: str) -> ExperimentPolicy | None:
    """The experiment that splits ``model`` for ``tenant`` (compile allows one at most)."""
    index = config.derived.get("experiments")
    if index is None:
        index = config.derived["experiments"] = _index(config.experiments)
    found: ExperimentPolicy | None = index.get((tenant, model))
    return found


def _index(
    experiments: Mapping[str, ExperimentPolicy],
) -> dict[tuple[str, str], ExperimentPolicy]:
    return {
        (tenant, policy.model): policy
        for policy in experiments.values()
        for tenant in policy.tenants
    }


MAX_UNIT_CHARS = 256


@dataclass(frozen=True, slots=True)
class Trial:
    """A request's part in an experiment."""

    policy: ExperimentPolicy
    variant: ExperimentVariant
    unit: str
    measured: bool = True
    """False once a policy sent all traffic to one variant (the experiment has ended)."""

    @property
    def label(self) -> str:
        """``experiment/variant`` for the x-llmrouter-experiment header."""
        return f"{self.policy.id.split('/', 1)[1]}/{self.variant.name}"

    @property
    def stats_key(self) -> str:
        return k.trial(self.policy.id, self.policy.epoch, self.variant.name)


def unit_of(
    policy: ExperimentPolicy,
    tenant: str,
    user: str,
    key_name: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    request_id: str,
) -> str | None:
    """What is randomised for this request, or None when the request carries no unit (it
    is then served by the requested model and not measured). Units are tenant-scoped."""
    if policy.unit == "request":
        return request_id
    if policy.unit == "apiKey":
        value: object = f"key:{key_name}"
    elif policy.unit == "header":
        assert policy.unit_header is not None
        value = headers.get(policy.unit_header)
    elif user.startswith("user:"):  # an OIDC subject
        value = user
    else:
        value = body.get("user")
    if not isinstance(value, str) or not value or len(value) > MAX_UNIT_CHARS:
        return None
    return f"{tenant}\x1f{value}"


def assign(policy: ExperimentPolicy, unit: str) -> Trial | None:
    if policy.routed_to is not None:
        return Trial(policy, policy.variant(policy.routed_to), unit, measured=False)
    if not exposed(policy, unit):
        return None
    return Trial(policy, variant_of(policy, unit), unit)


def with_variant(body: Mapping[str, Any], variant: ExperimentVariant) -> dict[str, Any]:
    """The request body as the variant sends it: its model's parameters, its prompt prefix."""
    out = {**body, **variant.overrides}
    if "max_tokens" in variant.overrides:
        out.pop("max_completion_tokens", None)
    prefix = variant.system_prompt_prefix
    messages = body.get("messages")
    if prefix and isinstance(messages, list):
        first = messages[0] if messages else None
        if (
            isinstance(first, dict)
            and first.get("role") == "system"
            and isinstance(first.get("content"), str)
        ):
            out["messages"] = [{**first, "content": prefix + first["content"]}, *messages[1:]]
        else:
            out["messages"] = [{"role": "system", "content": prefix}, *messages]
    return out
