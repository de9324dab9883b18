"""SLAPolicy → one PrometheusRule with its recording and alerting rules, owned by it, and
the policy's compliance in its status.

Without prometheus-operator's CRD the rule file goes into a ConfigMap instead, the policy
says so in its RulesReady condition, and the handler retries until the CRD appears.

Compliance is evaluated every minute from the Prometheus HTTP API when the operator has
one (``LLMROUTER_PROMETHEUS_URL``, the chart's ``operator.prometheusURL``), else from the
gateway pods' own counts, summed (an approximation).
"""

from __future__ import annotations

import asyncio
import datetime
import os
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from llmrouter.operator import kube, settings
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.compliance import evaluate, policy_summary, state_changes
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition, merged
from llmrouter.operator.gateway_counts import GatewayCountsError, gateway_objectives
from llmrouter.operator.prometheus import PrometheusError, objective_values
from llmrouter.operator.render import GATEWAY_SELECTOR
from llmrouter.operator.slo import (
    describe_errors,
    prometheus_rule_name,
    render_prometheus_rule,
    render_rules_configmap,
    rules_configmap_name,
    warnings,
)

GATEWAY_METRICS_PORT = 9090
"""Where `llmrouter gateway` serves /metrics and /slo-counts by default."""


def retry_without_crd_s() -> float:
    """How soon to look again for the PrometheusRule CRD (tests shorten it)."""
    return float(os.environ.get("LLMROUTER_RULES_RETRY_INTERVAL", "120"))


@kopf.on.resume(GROUP, VERSION, "slapolicies")
@kopf.on.create(GROUP, VERSION, "slapolicies")
@kopf.on.update(GROUP, VERSION, "slapolicies", field="spec")
def reconcile(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    request_compile()  # the gateways count for the policies in their configuration
    generation = meta.get("generation")
    conditions = status.get("conditions")
    try:
        policy = SLAPolicy.model_validate(dict(body))
    except ValidationError as exc:
        message = describe_errors(exc)
        patch.status["conditions"] = merged(
            conditions, condition("RulesReady", False, "InvalidSpec", message, generation)
        )
        raise kopf.PermanentError(f"invalid spec: {message}") from exc
    patch.status["observedGeneration"] = generation
    problems = warnings(policy)
    for problem in problems:
        logger.warning("%s", problem)  # posted as an event too
    alerts = condition(
        "AlertsCanFire",
        not problems,
        "TargetTooLow" if problems else "AllCanFire",
        "; ".join(problems),
        generation,
    )
    rule = render_prometheus_rule(policy)
    kopf.adopt(rule, owner=body)
    namespace = policy.metadata.namespace
    try:
        kube.apply(rule)
    except ResourceNotFoundError:
        configmap = render_rules_configmap(policy)
        kopf.adopt(configmap, owner=body)
        kube.apply(configmap)
        message = (
            "the PrometheusRule CRD (monitoring.coreos.com/v1) is not installed: the rule "
            f"file is in ConfigMap {configmap['metadata']['name']} instead; looking again "
            f"every {retry_without_crd_s():g} s"
        )
        patch.status["conditions"] = merged(
            conditions,
            condition("RulesReady", False, "PrometheusRuleCRDNotInstalled", message, generation),
            alerts,
        )
        raise kopf.TemporaryError(message, delay=retry_without_crd_s()) from None
    # The fallback has done its job once the real object exists.
    kube.delete("v1", "ConfigMap", rules_configmap_name(policy), namespace)
    patch.status["conditions"] = merged(
        conditions,
        condition(
            "RulesReady",
            True,
            "Applied",
            f"PrometheusRule {prometheus_rule_name(policy)}",
            generation,
        ),
        alerts,
    )
    logger.info("applied PrometheusRule %s", prometheus_rule_name(policy))


def gateway_urls() -> list[str]:
    """The metrics listeners of the running gateway pods."""
    pods = kube.list_objects(
        "v1",
        "Pod",
        namespace=settings.current().namespace,
        label_selector=",".join(f"{k}={v}" for k, v in GATEWAY_SELECTOR.items()),
    )
    return [
        f"http://{pod['status']['podIP']}:{GATEWAY_METRICS_PORT}"
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running"
        and (pod.get("status") or {}).get("podIP")
    ]


def prometheus_url() -> str | None:
    return os.environ.get("LLMROUTER_PROMETHEUS_URL") or None


def evaluation_interval_s() -> float:
    return float(os.environ.get("LLMROUTER_SLO_INTERVAL", "60"))


def due(status: Any, generation: int | None, now: datetime.datetime) -> bool:
    """Whether a minute has passed since the last evaluation, or the spec changed."""
    last = status.get("lastEvaluated")
    if not last or status.get("evaluatedGeneration") != generation:
        return True
    then = datetime.datetime.fromisoformat(last.replace("Z", "+00:00"))
    return (now - then).total_seconds() >= evaluation_interval_s()


@kopf.on.delete(GROUP, VERSION, "slapolicies", optional=True)
def policy_deleted(**_: Any) -> None:
    request_compile()


# The timer only wakes often; due() decides, so the interval can be read when it runs.
@kopf.timer(GROUP, VERSION, "slapolicies", interval=1, initial_delay=1)
async def evaluate_compliance(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    generation = meta.get("generation")
    if not due(status, generation, now):
        return
    try:
        policy = SLAPolicy.model_validate(dict(body))
    except ValidationError:
        return  # RulesReady says why
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    patch.status["lastEvaluated"] = stamp
    patch.status["evaluatedGeneration"] = generation
    conditions = status.get("conditions")
    url = prometheus_url()
    if url is not None:
        try:
            values = await objective_values(url, policy)
        except PrometheusError as exc:
            logger.warning("compliance not evaluated: %s", exc)
            patch.status["conditions"] = merged(
                conditions,
                condition("ComplianceKnown", False, "PrometheusUnavailable", str(exc), generation),
            )
            return
        objectives = evaluate(policy, values)
        source = "prometheus"
        known = condition("ComplianceKnown", True, "Evaluated", url, generation)
    else:
        gateways = await asyncio.to_thread(gateway_urls)
        if not gateways:
            patch.status["source"] = None
            patch.status["conditions"] = merged(
                conditions,
                condition(
                    "ComplianceKnown",
                    False,
                    "NoSource",
                    "no Prometheus to ask (set the chart value operator.prometheusURL) and no "
                    "running gateway pod to count",
                    generation,
                ),
            )
            return
        try:
            objectives, answered = await gateway_objectives(gateways, policy)
        except GatewayCountsError as exc:
            logger.warning("compliance not evaluated: %s", exc)
            patch.status["conditions"] = merged(
                conditions,
                condition(
                    "ComplianceKnown", False, "GatewayCountsUnavailable", str(exc), generation
                ),
            )
            return
        source = "gateways"
        known = condition(
            "ComplianceKnown",
            True,
            "GatewayCounts",
            f"an approximation: the counts of {answered} of {len(gateways)} gateway pods since "
            "each started; set operator.prometheusURL for Prometheus' figures",
            generation,
        )
    patch.status.update(policy_summary(objectives))
    patch.status["objectives"] = objectives
    patch.status["source"] = source
    patch.status["conditions"] = merged(conditions, known)
    for name, old, new in state_changes(status.get("objectives"), objectives):
        kind = "Warning" if new in ("warning", "breached") else "Normal"
        message = f"objective {name}: {old} -> {new}"
        kopf.event(body, type=kind, reason="ObjectiveState", message=message)
        logger.info("%s", message)
