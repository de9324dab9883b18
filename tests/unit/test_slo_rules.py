"""The SLO rule renderer: factors, the exact rules of one objective, warnings, the CLI."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmrouter.cli import main
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.slo import (
    factors,
    render_prometheus_rule,
    render_rules_configmap,
    rule_file,
    selector,
    warnings,
)


def policy(objectives: list[dict[str, Any]], **spec: Any) -> SLAPolicy:
    return SLAPolicy.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "SLAPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"tenant": "acme", "objectives": objectives, **spec},
        }
    )


AVAILABILITY = {"name": "availability", "type": "availability", "target": "99.9"}


def test_factors_follow_the_sre_workbook_and_scale_with_the_window() -> None:
    assert factors(30) == {
        "1h/5m": Decimal("14.4"),
        "6h/30m": Decimal("6"),
        "1d/2h": Decimal("3"),
        "3d/6h": Decimal("1"),
    }
    assert factors(28) == {
        "1h/5m": Decimal("13.44"),
        "6h/30m": Decimal("5.6"),
        "1d/2h": Decimal("2.8"),
        "3d/6h": Decimal("0.9333"),
    }


def test_the_rules_of_a_latency_objective() -> None:
    p = policy(
        [{"name": "fast", "type": "ttft", "percentile": 99, "threshold": "500ms"}],
        models=["llama-3.1", "b"],
        window="28d",
        alerting={"minRequestsPerHour": 0, "severities": {"page": "p1", "ticket": "p3"}},
    )
    [group] = rule_file([p])["groups"]
    labels = {"slapolicy": "team/p", "objective": "fast", "tenant": "team/acme"}
    sel = 'tenant="team/acme",model=~"b|llama\\\\-3\\\\.1"'
    count = f"llmrouter_time_to_first_token_seconds_count{{{sel}}}"
    bucket = f'llmrouter_time_to_first_token_seconds_bucket{{{sel},le="0.5"}}'
    assert group["name"] == "slo-team-p-fast"
    rules = {
        r.get("record") or f"{r['alert']} {r['labels']['long_window']}": r for r in group["rules"]
    }
    assert rules["llmrouter_slo:error_ratio:rate6h"] == {
        "record": "llmrouter_slo:error_ratio:rate6h",
        "expr": f"(sum(increase({count}[6h])) - sum(increase({bucket}[6h])))"
        f" / (sum(increase({count}[6h])) > 0)",
        "labels": labels,
    }
    series = 'slapolicy="team/p",objective="fast",tenant="team/acme"'
    assert rules["llmrouter_slo:error_ratio:period"]["expr"] == (
        f"sum_over_time(llmrouter_slo:errors:increase5m{{{series}}}[28d])"
        f" / (sum_over_time(llmrouter_slo:events:increase5m{{{series}}}[28d]) > 0)"
    )
    assert rules["llmrouter_slo:objective"]["expr"] == "vector(0.99)"
    assert rules["llmrouter_slo:error_budget_remaining"]["expr"] == (
        f"1 - llmrouter_slo:error_ratio:period{{{series}}} / 0.01"
    )
    page = rules["LLMRouterErrorBudgetBurn 1h"]
    # 13.44 x 1 %; no traffic guard when minRequestsPerHour is 0.
    assert page["expr"] == (
        f"llmrouter_slo:error_ratio:rate1h{{{series}}} > 0.1344"
        f" and llmrouter_slo:error_ratio:rate5m{{{series}}} > 0.1344"
    )
    assert page["labels"] == {**labels, "severity": "p1", "long_window": "1h", "short_window": "5m"}
    assert rules["LLMRouterErrorBudgetBurn 3d"]["labels"]["severity"] == "p3"
    assert [r.get("record", r.get("alert")) for r in group["rules"]][:7] == [
        f"llmrouter_slo:error_ratio:rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    ]


def test_availability_counts_5xx_among_answers_that_were_not_4xx() -> None:
    [group] = rule_file([policy([AVAILABILITY])])["groups"]
    ratio = next(r for r in group["rules"] if r.get("record") == "llmrouter_slo:error_ratio:rate1h")
    assert ratio["expr"] == (
        '(sum(increase(llmrouter_requests_total{tenant="team/acme",code=~"5.."}[1h]))'
        " or vector(0))"
        ' / (sum(increase(llmrouter_requests_total{tenant="team/acme",code!~"4.."}[1h])) > 0)'
    )
    alert = next(r for r in group["rules"] if r.get("alert"))
    assert alert["expr"].endswith(
        ' and llmrouter_slo:events:increase1h{slapolicy="team/p",objective="availability",'
        'tenant="team/acme"} >= 60'
    )


def test_disabled_alerting_keeps_the_recording_rules() -> None:
    [group] = rule_file([policy([AVAILABILITY], alerting={"enabled": False})])["groups"]
    assert not [r for r in group["rules"] if "alert" in r]
    assert len(group["rules"]) == 13


def test_a_model_name_cannot_break_out_of_its_matcher() -> None:
    p = policy([AVAILABILITY], models=["a.b", "x:y/z"])
    assert selector(p) == '{tenant="team/acme",model=~"a\\\\.b|x:y/z"}'


def test_a_target_that_makes_a_page_impossible_is_warned_about() -> None:
    assert warnings(policy([AVAILABILITY])) == []
    low = policy([{**AVAILABILITY, "target": "90"}])
    assert warnings(low) == [
        "objective availability: the 1h/5m page can never fire: it needs an error ratio above "
        "14.4 x 10% = 144%, more than every request failing; a target above 93.06% makes it "
        "possible"
    ]
    assert len(warnings(policy([{**AVAILABILITY, "target": "80"}]))) == 2  # 6 x 20 % too


def test_slo_rules_prints_the_rule_file_of_the_policies_in_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "all.yaml"
    f.write_text(
        "apiVersion: llmrouter.io/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\n"
        "spec: {models: ['*']}\n---\n"
        "apiVersion: llmrouter.io/v1alpha1\nkind: SLAPolicy\nmetadata: {name: p}\n"
        "spec: {tenant: acme, objectives: [{name: a, type: availability, target: '91'}]}\n"
    )
    assert main(["slo", "rules", "-f", str(f)]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["groups"][0]["name"] == "slo-default-p-a"
    assert "&id" not in out
    assert "warning: SLAPolicy default/p: objective a: the 1h/5m page can never fire" in err


def test_slo_rules_names_the_file_and_field_of_a_bad_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "apiVersion: llmrouter.io/v1alpha1\nkind: SLAPolicy\nmetadata: {name: p}\n"
        "spec: {tenant: acme, objectives: [{name: l, type: latency, percentile: 95, "
        "threshold: 1.9s}]}\n"
    )
    assert main(["slo", "rules", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f} (document 1): spec.objectives.0: Value error, threshold must be a" in err
    assert "one of 25ms, 50ms" in err
    f.write_text("kind: Tenant\n")
    assert main(["slo", "rules", "-f", str(f)]) == 1
    assert "no SLAPolicy document" in capsys.readouterr().err


def test_the_prometheus_rule_and_its_configmap_fallback() -> None:
    p = policy([AVAILABILITY], ruleLabels={"release": "kps", "app.kubernetes.io/managed-by": "x"})
    labels = {
        "release": "kps",
        "llmrouter.io/slapolicy": "p",
        "app.kubernetes.io/managed-by": "llmrouter",  # a rule label cannot take it away
    }
    assert render_prometheus_rule(p) == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "slapolicy-p", "namespace": "team", "labels": labels},
        "spec": rule_file([p]),
    }
    configmap = render_rules_configmap(p)
    assert configmap["metadata"] == {
        "name": "slapolicy-p-rules",
        "namespace": "team",
        "labels": labels,
    }
    assert yaml.safe_load(configmap["data"]["rules.yaml"]) == rule_file([p])
