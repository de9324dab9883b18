"""Which model answers a request: aliases, the tenant's routing rules, fallbacks. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrouter.gateway.config import GatewayConfig, ModelRoute, TenantPolicy
from llmrouter.gateway.errors import ModelNotFound
from llmrouter.gateway.experiments.assignment import Trial

TASK_TYPE_HEADER = "x-llmrouter-task-type"


@dataclass(frozen=True, slots=True)
class Resolution:
    route: ModelRoute
    steps: tuple[str, ...]
    """How the requested name became this model, for the x-llmrouter-route header."""


def resolve(
    config: GatewayConfig,
    tenant: TenantPolicy,
    name: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> Resolution:
    """The model a tenant's request names. A model the tenant may not use is answered
    exactly like one that does not exist (404), so tenants cannot probe each other's."""
    requested = config.resolve(name)
    if requested is None or requested.name not in tenant.models:
        raise ModelNotFound(
            f"model {name!r} does not exist or you do not have access to it", param="model"
        )
    steps = [f"alias {name}->{requested.name}"] if name != requested.name else []
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    task_type = headers.get(TASK_TYPE_HEADER) or metadata.get("task_type")
    for i, rule in enumerate(tenant.rules):
        if rule.task_type is not None and rule.task_type != task_type:
            continue
        if rule.requested is not None and rule.requested != requested.name:
            continue
        if any(metadata.get(key) != value for key, value in rule.metadata.items()):
            continue
        steps.append(f"rule {i}->{rule.target}")
        return Resolution(config.models[rule.target], tuple(steps))
    return Resolution(requested, tuple(steps))


def with_trial(config: GatewayConfig, name: str, trial: Trial) -> Resolution:
    """An experiment's variant answers instead of the tenant's routing rules."""
    requested = config.resolve(name)
    steps = [f"alias {name}->{requested.name}"] if requested and name != requested.name else []
    route = config.models[trial.variant.model]
    steps.append(f"experiment {trial.label}->{route.name}")
    return Resolution(route, tuple(steps))


def fallback_chain(
    config: GatewayConfig, tenant: TenantPolicy, route: ModelRoute
) -> list[ModelRoute]:
    """The model, then its fallbacks and theirs, breadth first, only those the tenant may
    use, each once."""
    chain, seen, queue = [route], {route.name}, list(route.fallbacks)
    while queue:
        name = queue.pop(0)
        if name in seen or name not in tenant.models or name not in config.models:
            continue
        seen.add(name)
        chain.append(config.models[name])
        queue.extend(config.models[name].fallbacks)
    return chain
