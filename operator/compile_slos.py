"""SLAPolicy → what a gateway counts for it (GatewayConfig.slos): pure."""

from __future__ import annotations

from collections.abc import Iterable

from llmrouter.gateway.slo_config import SLOObjective, SLOPolicy
from llmrouter.operator.api.slapolicy import SLAPolicy


def compile_slos(policies: Iterable[SLAPolicy]) -> dict[str, SLOPolicy]:
    return {
        f"{p.metadata.namespace}/{p.metadata.name}": SLOPolicy(
            tenant=f"{p.metadata.namespace}/{p.spec.tenant}",
            models=tuple(sorted(set(p.spec.models))),
            window_days=p.spec.window_days,
            objectives=tuple(
                SLOObjective(
                    name=o.name,
                    type=o.type,
                    objective_percent=str(o.objective_percent),
                    threshold_s=o.threshold_seconds,
                )
                for o in p.spec.objectives
            ),
        )
        for p in policies
    }
