"""Prometheus rules for an SLAPolicy: pure functions from the policy to a rule file.

Per objective:

- error ratios over 5m, 30m, 1h, 2h, 6h, 1d and 3d, each guarded by ``events > 0`` so an
  idle tenant yields no sample rather than NaN (a NaN budget pages nobody and breaks
  dashboards);
- increases over 5m of events and errors, and from them the period ratio as
  ``sum_over_time(errors[window]) / sum_over_time(events[window])``: weighted by traffic,
  where an average of ratios would let a quiet night count as much as a busy day;
- the objective and the error budget remaining;
- multiwindow, multi-burn-rate alerts (SRE Workbook, ch. 5): page when 1h and 5m burn
  faster than the rate that spends 2 % of the budget in an hour, or 6h and 30m 5 % in six
  hours; ticket for 1d and 2h at 10 % in a day, 3d and 6h at 10 % in three days. The
  factors are ``share * window / long window``, so a 28-day window gets its own.

Availability counts 5xx among the answers that were not the client's own 4xx; latency
and TTFT count requests over the threshold as ``count - bucket{le=T}``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import yaml
from pydantic import ValidationError

from llmrouter.gateway.sli import BURN_ALERTS, BURN_RATE_WINDOWS, BurnAlert, le_label
from llmrouter.operator.api.slapolicy import Objective, SLAPolicy
from llmrouter.operator.render import MANAGED_BY

RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

PREFIX = "llmrouter_slo"
POLICY_LABEL = "llmrouter.io/slapolicy"
RULES_KEY = "rules.yaml"


def factors(window_days: int) -> dict[str, Decimal]:
    """``long/short`` → burn-rate factor, e.g. ``1h/5m`` → 14.4 for 30 days."""
    return {f"{a.long}/{a.short}": _tidy(a.factor(window_days)) for a in BURN_ALERTS}


def _tidy(value: Decimal) -> Decimal:
    """Rounded to what a rule can show without float noise (28d: 0.9333…)."""
    return value.quantize(Decimal("0.0001")).normalize()


def error_budget(objective: Objective) -> Decimal:
    """The share of events allowed to be bad, 0..1."""
    return (100 - objective.objective_percent) / 100


def warnings(policy: SLAPolicy) -> list[str]:
    """What about a policy makes an alert unable to ever fire."""
    out = []
    for o in policy.spec.objectives:
        budget = error_budget(o)
        for a in BURN_ALERTS:
            factor = _tidy(a.factor(policy.spec.window_days))
            if factor * budget >= 1:
                out.append(
                    f"objective {o.name}: the {a.long}/{a.short} {a.severity} can never fire: "
                    f"it needs an error ratio above {factor} x {_pct(budget)} = "
                    f"{_pct(factor * budget)}, more than every request failing; a target "
                    f"above {_pct(1 - 1 / factor)} makes it possible"
                )
    return out


def _pct(share: Decimal) -> str:
    return f"{(share * 100).quantize(Decimal('0.01')).normalize():f}%"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(policy: SLAPolicy, *extra: str) -> str:
    """Label matchers for the policy's tenant and models (all of them when none is named)."""
    tenant = f"{policy.metadata.namespace}/{policy.spec.tenant}"
    matchers = [f"tenant={_quote(tenant)}"]
    if policy.spec.models:
        alternatives = "|".join(re.escape(m) for m in sorted(set(policy.spec.models)))
        matchers.append(f"model=~{_quote(alternatives)}")
    return "{" + ",".join([*matchers, *extra]) + "}"


def _sums(policy: SLAPolicy, o: Objective, window: str) -> tuple[str, str]:
    """PromQL for (events, bad events) of an objective over a window, unaggregated by
    label: one sample, or none when no series exists."""
    if o.type == "availability":
        answered = selector(policy, 'code!~"4.."')
        failed = selector(policy, 'code=~"5.."')
        events = f"sum(increase(llmrouter_requests_total{answered}[{window}]))"
        errors = f"sum(increase(llmrouter_requests_total{failed}[{window}]))"
        # With no 5xx series at all the sum is empty, not 0: that would read as no data.
        return events, f"({errors} or vector(0))"
    metric = (
        "llmrouter_request_duration_seconds"
        if o.type == "latency"
        else "llmrouter_time_to_first_token_seconds"
    )
    threshold = o.threshold_seconds
    assert threshold is not None  # the model requires it for latency and ttft
    events = f"sum(increase({metric}_count{selector(policy)}[{window}]))"
    within = selector(policy, "le=" + _quote(le_label(threshold)))
    good = f"sum(increase({metric}_bucket{within}[{window}]))"
    return events, f"({events} - {good})"


def objective_queries(policy: SLAPolicy, o: Objective) -> dict[str, str]:
    """Instant queries for an objective's compliance, straight from the gateway's series
    (the recording rules may not be loaded where the status is computed): events and bad
    events over the window, and the error ratio over each alert's long window."""
    events, errors = _sums(policy, o, policy.spec.window)
    queries = {"events": events, "errors": errors}
    for window in BURN_RATE_WINDOWS:
        events_w, errors_w = _sums(policy, o, window)
        queries[f"ratio{window}"] = f"{errors_w} / ({events_w} > 0)"
    return queries


def objective_labels(policy: SLAPolicy, o: Objective) -> dict[str, str]:
    return {
        "slapolicy": f"{policy.metadata.namespace}/{policy.metadata.name}",
        "objective": o.name,
        "tenant": f"{policy.metadata.namespace}/{policy.spec.tenant}",
    }


def _series(name: str, labels: dict[str, str]) -> str:
    matchers = ",".join(f"{k}={_quote(v)}" for k, v in labels.items())
    return f"{PREFIX}:{name}{{{matchers}}}"


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def objective_group(policy: SLAPolicy, o: Objective) -> dict[str, Any]:
    """One rule group: the recording rules an objective's alerts read, then the alerts
    (a group evaluates in order, so they see this round's values)."""
    labels = objective_labels(policy, o)
    rules: list[dict[str, Any]] = []
    for window in RATIO_WINDOWS:
        events, errors = _sums(policy, o, window)
        rules.append(
            {
                "record": f"{PREFIX}:error_ratio:rate{window}",
                "expr": f"{errors} / ({events} > 0)",
                "labels": labels,
            }
        )
    events5m, errors5m = _sums(policy, o, "5m")
    events1h, _ = _sums(policy, o, "1h")
    rules += [
        {"record": f"{PREFIX}:events:increase5m", "expr": events5m, "labels": labels},
        {"record": f"{PREFIX}:errors:increase5m", "expr": errors5m, "labels": labels},
        {"record": f"{PREFIX}:events:increase1h", "expr": events1h, "labels": labels},
    ]
    window = policy.spec.window
    budget = error_budget(o)
    rules += [
        {
            "record": f"{PREFIX}:error_ratio:period",
            "expr": f"sum_over_time({_series('errors:increase5m', labels)}[{window}])"
            f" / (sum_over_time({_series('events:increase5m', labels)}[{window}]) > 0)",
            "labels": labels,
        },
        {
            "record": f"{PREFIX}:objective",
            "expr": f"vector({_number(o.objective_percent / 100)})",
            "labels": labels,
        },
        {
            "record": f"{PREFIX}:error_budget_remaining",
            "expr": f"1 - {_series('error_ratio:period', labels)} / {_number(budget)}",
            "labels": labels,
        },
    ]
    if policy.spec.alerting.enabled:
        rules += [_alert(policy, o, a, labels) for a in BURN_ALERTS]
    return {
        "name": f"slo-{policy.metadata.namespace}-{policy.metadata.name}-{o.name}",
        "rules": rules,
    }


def _alert(policy: SLAPolicy, o: Objective, a: BurnAlert, labels: dict[str, str]) -> dict[str, Any]:
    alerting = policy.spec.alerting
    factor = _tidy(a.factor(policy.spec.window_days))
    threshold = _number(factor * error_budget(o))
    expr = (
        f"{_series(f'error_ratio:rate{a.long}', labels)} > {threshold}"
        f" and {_series(f'error_ratio:rate{a.short}', labels)} > {threshold}"
    )
    if alerting.min_requests_per_hour > 0:
        # Three failures out of five requests is no outage worth waking anyone for.
        traffic = _series("events:increase1h", labels)
        expr = f"({expr}) and {traffic} >= {alerting.min_requests_per_hour}"
    severity = alerting.severities.page if a.severity == "page" else alerting.severities.ticket
    what = {"availability": "errors", "latency": "slow requests", "ttft": "slow first tokens"}
    return {
        "alert": "LLMRouterErrorBudgetBurn",
        "expr": expr,
        "labels": {
            **alerting.labels,
            **labels,
            "severity": severity,
            "long_window": a.long,
            "short_window": a.short,
        },
        "annotations": {
            "summary": f"SLAPolicy {labels['slapolicy']} objective {o.name}: error budget "
            f"burning at over {factor}x in {a.long} and {a.short}",
            "description": f"{what[o.type].capitalize()} of tenant {labels['tenant']} over "
            f"the last {a.long} and {a.short} are above {_pct(factor * error_budget(o))} of "
            f"requests, against {_pct(error_budget(o))} allowed over {policy.spec.window}; at "
            f"{factor}x the "
            f"budget rate, {_pct(a.budget_share)} of the {policy.spec.window} budget goes in "
            f"{a.long}.",
            **alerting.annotations,
        },
    }


def describe_errors(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field: ``spec.objectives.0: ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'document'}: {e['msg']}"
        for e in exc.errors()
    )


def rule_groups(policy: SLAPolicy) -> list[dict[str, Any]]:
    return [objective_group(policy, o) for o in policy.spec.objectives]


def rule_file(policies: list[SLAPolicy]) -> dict[str, Any]:
    """A Prometheus rule file (``rule_files:``) for the policies."""
    return {"groups": [g for p in policies for g in rule_groups(p)]}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a rule file is read by people: no &id001 anchors


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def prometheus_rule_name(policy: SLAPolicy) -> str:
    return f"slapolicy-{policy.metadata.name}"


def rules_configmap_name(policy: SLAPolicy) -> str:
    return f"slapolicy-{policy.metadata.name}-rules"


def _metadata(policy: SLAPolicy, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": policy.metadata.namespace,
        # ruleLabels first: they may not take away what marks the object as ours.
        "labels": {**policy.spec.rule_labels, POLICY_LABEL: policy.metadata.name, **MANAGED_BY},
    }


def render_prometheus_rule(policy: SLAPolicy) -> dict[str, Any]:
    """The prometheus-operator object holding the policy's rules."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(policy, prometheus_rule_name(policy)),
        "spec": rule_file([policy]),
    }


def render_rules_configmap(policy: SLAPolicy) -> dict[str, Any]:
    """Where no prometheus-operator runs: the plain rule file, for a Prometheus that reads
    rule files (mount the ConfigMap, or copy it out)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(policy, rules_configmap_name(policy)),
        "data": {RULES_KEY: dump(rule_file([policy]))},
    }
