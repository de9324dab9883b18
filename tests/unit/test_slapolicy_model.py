"""The SLAPolicy model refuses what the CRD refuses, with messages that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llmrouter.operator.api.slapolicy import SLAPolicy, SLAPolicySpec


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "objectives": [{"name": "availability", "type": "availability", "target": "99.9"}],
        **overrides,
    }


def test_a_full_policy_reads_with_its_defaults() -> None:
    policy = SLAPolicy.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "SLAPolicy",
            "metadata": {"name": "acme", "namespace": "team"},
            "spec": spec(
                models=["llama"],
                window="28d",
                objectives=[
                    {"name": "availability", "type": "availability", "target": "99.5"},
                    {"name": "latency-p95", "type": "latency", "percentile": 95, "threshold": "2s"},
                    {"name": "ttft-p99", "type": "ttft", "percentile": 99, "threshold": "500ms"},
                ],
                alerting={"labels": {"team": "ml"}, "annotations": {"runbook_url": "https://x"}},
                ruleLabels={"release": "kube-prometheus-stack"},
            ),
        }
    )
    s = policy.spec
    assert s.window_days == 28
    assert [str(o.objective_percent) for o in s.objectives] == ["99.5", "95.0", "99.0"]
    assert [o.threshold_seconds for o in s.objectives] == [None, 2.0, 0.5]
    assert s.alerting.enabled and s.alerting.min_requests_per_hour == 60
    assert s.alerting.severities.page == "critical"
    assert s.rule_labels == {"release": "kube-prometheus-stack"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"objectives": [{"name": "l", "type": "ttft", "percentile": 9, "threshold": "1.9s"}]},
            "threshold must be a histogram bucket boundary: one of 25ms, 50ms, 100ms, 250ms, "
            "500ms, 750ms, 1s, 1.5s, 2s, 3s, 5s, 7.5s, 10s, 15s, 30s, 60s, 120s, 300s (got 1.9s)",
        ),
        (
            {"objectives": [{"name": "a", "type": "availability"}]},
            "an availability objective takes target, not percentile or threshold",
        ),
        (
            {"objectives": [{"name": "l", "type": "latency", "target": "99"}]},
            "a latency or ttft objective takes percentile and threshold, not target",
        ),
        ({"objectives": [{"name": "a", "type": "availability", "target": "100"}]}, "target"),
        ({"objectives": [{"name": "a", "type": "availability", "target": "0"}]}, "above 0 %"),
        ({"window": "7d"}, "window"),
        ({"objectives": []}, "objectives"),
        (
            {
                "objectives": [
                    {"name": "a", "type": "availability", "target": "99"},
                    {"name": "a", "type": "availability", "target": "98"},
                ]
            },
            "objective names must be unique: a",
        ),
        ({"alerting": {"labels": {"bad-name": "x"}}}, "'bad-name' is not a Prometheus label name"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        SLAPolicySpec.model_validate(spec(**overrides))
    assert message in str(err.value)


def test_thresholds_are_compared_as_durations() -> None:
    for text in ("2000ms", "2s", "0.5s", "500ms", "5m"):
        objective = {"name": "l", "type": "latency", "percentile": 90, "threshold": text}
        parsed = SLAPolicySpec.model_validate(spec(objectives=[objective]))
        assert parsed.objectives[0].threshold_seconds in (2.0, 0.5, 300.0)
