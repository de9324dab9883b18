"""An experiment's figures now: its variants' statistics from the state store, analysed.

The gateway's admin view and the operator's status both come from here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmrouter.gateway.config import ExperimentPolicy
from llmrouter.gateway.experiments.assignment import Trial
from llmrouter.gateway.experiments.stats import (
    Analysis,
    AnalysisSettings,
    MetricSpec,
    RatioSums,
    VariantData,
    analyse,
)
from llmrouter.gateway.state import StateStore, TrialStats


@dataclass(frozen=True, slots=True)
class Report:
    policy: ExperimentPolicy
    variants: tuple[dict[str, Any], ...]
    """Per variant: name, model, units, requests, expected and observed share."""
    analysis: Analysis

    def to_status(self) -> dict[str, Any]:
        out = self.analysis.to_status()
        for result in out["results"]:
            if result["interval"] is None:
                result["interval"] = []
        return {"epoch": self.policy.epoch, "variants": list(self.variants), **out}


def expected_shares(policy: ExperimentPolicy) -> dict[str, float]:
    total = sum(v.weight for v in policy.variants)
    return {v.name: v.weight / total for v in policy.variants}


async def report(state: StateStore, policy: ExperimentPolicy, elapsed_s: float) -> Report:
    stats: dict[str, TrialStats] = {}
    for v in policy.variants:
        key = Trial(policy, v, "").stats_key
        stats[v.name] = await state.trial_stats(key)
    return build_report(policy, stats, elapsed_s)


def build_report(
    policy: ExperimentPolicy, stats: dict[str, TrialStats], elapsed_s: float
) -> Report:
    shares = expected_shares(policy)
    data = [
        VariantData(
            name=v.name,
            expected_share=shares[v.name],
            units=stats[v.name].units,
            metrics={
                metric: RatioSums(
                    n=int(s["n"]), m=s["m"], d=s["d"], mm=s["mm"], dd=s["dd"], md=s["md"]
                )
                for metric, s in stats[v.name].sums.items()
            },
        )
        for v in policy.variants
        if v.weight > 0
    ]
    a = policy.analysis
    analysis = analyse(
        data,
        policy.control,
        MetricSpec(policy.primary.name, policy.primary.direction),
        [MetricSpec(g.name, g.direction, g.margin) for g in policy.guardrails],
        AnalysisSettings(
            alpha=a.alpha,
            srm_alpha=a.srm_alpha,
            min_units_per_variant=a.min_units_per_variant,
            max_units=a.max_units,
            max_duration_s=a.max_duration_s,
        ),
        elapsed_s,
    )
    units = sum(stats[v.name].units for v in policy.variants)
    variants = tuple(
        {
            "name": v.name,
            "model": v.model,
            "units": stats[v.name].units,
            "requests": int(stats[v.name].sums.get("errorRate", {}).get("d", 0)),
            "expectedShare": round(shares[v.name], 6),
            "observedShare": round(stats[v.name].units / units, 6) if units else 0.0,
        }
        for v in policy.variants
    )
    return Report(policy, variants, analysis)
