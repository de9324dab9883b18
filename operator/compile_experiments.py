"""Experiments compiled against the models and tenants already compiled.

Each Experiment is checked alone: one naming an unknown model, a variant a tenant may not
use, or a model another experiment already splits for the same tenant is left out with a
problem naming its field, and the rest of the configuration stands.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from llmrouter.gateway.config import (
    ExperimentAnalysis,
    ExperimentMetric,
    ExperimentPolicy,
    ExperimentVariant,
    GatewayConfig,
)
from llmrouter.operator.api.common import parse_duration
from llmrouter.operator.api.experiment import Experiment
from llmrouter.operator.compile import Problem, claim_order


def compile_experiments(
    experiments: Iterable[Experiment], config: GatewayConfig
) -> tuple[dict[str, ExperimentPolicy], list[Problem]]:
    problems: list[Problem] = []
    compiled: dict[str, ExperimentPolicy] = {}
    claimed: dict[tuple[str, str], str] = {}  # (tenant, model) → experiment that splits it
    for exp in sorted(experiments, key=claim_order):
        policy = _policy(exp, config, problems)
        if policy is None:
            continue
        taken = sorted(
            claimed[tenant, policy.model]
            for tenant in policy.tenants
            if (tenant, policy.model) in claimed
        )
        if taken:
            problems.append(
                Problem(
                    exp.ref,
                    "spec.model",
                    f"model {policy.model!r} is already split by Experiment {taken[0]} for "
                    "one of these tenants",
                    conflict=True,
                )
            )
            continue
        for tenant in policy.tenants:
            claimed[tenant, policy.model] = policy.id
        compiled[policy.id] = policy
    return dict(sorted(compiled.items())), problems


def _policy(
    exp: Experiment, config: GatewayConfig, problems: list[Problem]
) -> ExperimentPolicy | None:
    spec, ns = exp.spec, exp.metadata.namespace
    found = len(problems)
    route = config.resolve(spec.model)
    if route is None:
        problems.append(Problem(exp.ref, "spec.model", f"unknown model {spec.model!r}"))
        return None
    if "*" in spec.tenants:
        tenants = {t for t in config.tenants if t.startswith(f"{ns}/")}
    else:
        tenants = {f"{ns}/{name}" for name in spec.tenants}
        for i, name in enumerate(spec.tenants):
            if f"{ns}/{name}" not in config.tenants:
                problems.append(
                    Problem(exp.ref, f"spec.tenants[{i}]", f"no Tenant {name!r} in namespace {ns}")
                )
    variants = []
    for i, v in enumerate(spec.variants):
        target = config.resolve(v.model)
        if target is None:
            problems.append(
                Problem(exp.ref, f"spec.variants[{i}].model", f"unknown model {v.model!r}")
            )
            continue
        barred = sorted(
            t
            for t in tenants
            if t in config.tenants and target.name not in config.tenants[t].models
        )
        if barred:
            problems.append(
                Problem(
                    exp.ref,
                    f"spec.variants[{i}].model",
                    f"Tenant {barred[0]} may not use model {target.name!r}",
                )
            )
            continue
        overrides: dict[str, float | int] = {}
        for name, value in (
            ("temperature", v.overrides.temperature),
            ("top_p", v.overrides.top_p),
            ("max_tokens", v.overrides.max_tokens),
        ):
            if value is not None:
                overrides[name] = value
        variants.append(
            ExperimentVariant(
                name=v.name,
                model=target.name,
                weight=v.weight,
                overrides=overrides,
                system_prompt_prefix=v.overrides.system_prompt_prefix,
            )
        )
    if len(problems) > found:
        return None
    routed_to = exp.status.routed_to if exp.status is not None else None
    policy = ExperimentPolicy(
        id=exp.experiment_id,
        model=route.name,
        tenants=frozenset(tenants),
        unit=spec.unit,
        unit_header=spec.unit_header.lower() if spec.unit_header else None,
        variants=tuple(variants),
        control=spec.control,
        exposure_percent=spec.exposure_percent,
        epoch="",
        routed_to=routed_to if routed_to in {v.name for v in variants} else None,
        started_at=exp.metadata.creation_timestamp.timestamp()
        if exp.metadata.creation_timestamp
        else None,
        primary=ExperimentMetric(
            name=spec.metrics.primary.name, direction=spec.direction(spec.metrics.primary.name)
        ),
        guardrails=tuple(
            ExperimentMetric(name=g.name, direction=spec.direction(g.name), margin=float(g.margin))
            for g in spec.metrics.guardrails
        ),
        analysis=ExperimentAnalysis(
            alpha=float(spec.analysis.alpha),
            srm_alpha=float(spec.analysis.srm_alpha),
            min_units_per_variant=spec.analysis.min_units_per_variant,
            max_units=spec.analysis.max_units,
            max_duration_s=parse_duration(spec.analysis.max_duration)
            if spec.analysis.max_duration
            else None,
            interval_s=parse_duration(spec.analysis.interval),
        ),
    )
    return policy.model_copy(update={"epoch": split_epoch(policy)})


def split_epoch(policy: ExperimentPolicy) -> str:
    """A name for the split: which variants, their models, weights and overrides, and the
    exposure. Any change of them starts a new analysis; nothing else does."""
    split = {
        "variants": [v.model_dump(mode="json") for v in policy.variants],
        "exposure": policy.exposure_percent,
    }
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()[:8]
