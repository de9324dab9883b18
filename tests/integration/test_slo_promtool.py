"""The generated SLO rules, checked and unit-tested by the real promtool (Debian's
prometheus package, installed by hack/system-deps.sh).

Every scenario starts with three days of clean traffic, so the long windows are full and
only the burn rate under test can fire, as in production; then it asserts which alert
fires, and when, and that it clears once the errors stop.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.slo import dump, objective_labels, rule_file

HISTORY = 3 * 24 * 60  # minutes of clean traffic before each scenario
PER_MINUTE = 1000
SERIES = 'tenant="team/acme",model="llama",endpoint="chat"'


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run hack/system-deps.sh (Debian package prometheus)"
    return found


def policy(**spec: Any) -> SLAPolicy:
    return SLAPolicy.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "SLAPolicy",
            "metadata": {"name": "acme", "namespace": "team"},
            "spec": {
                "tenant": "acme",
                "models": ["llama"],
                "objectives": [
                    {"name": "availability", "type": "availability", "target": "99.9"},
                    {"name": "latency", "type": "latency", "percentile": 95, "threshold": "2s"},
                ],
                "alerting": {"labels": {"team": "ml"}, "annotations": {"runbook_url": "r"}},
                **spec,
            },
        }
    )


POLICY = policy()


def counter(*phases: tuple[int, int]) -> str:
    """promtool values of a counter growing by ``per_minute`` for ``minutes``, phase after
    phase, starting at 0."""
    parts, value = ["0"], 0
    for per_minute, minutes in phases:
        if minutes == 0:
            continue
        parts.append(f"{value + per_minute}+{per_minute}x{minutes - 1}")
        value += per_minute * minutes
    return " ".join(parts)


def requests(
    error_percent: float, minutes: int, after: int = 60, history: int = HISTORY
) -> list[dict[str, str]]:
    """Clean history, then ``error_percent`` of 5xx for ``minutes``, then clean ``after``.
    Also 4xx at a third of the traffic all along: the tenant's own, which must move
    nothing."""
    errors = round(PER_MINUTE * error_percent / 100)
    ok = PER_MINUTE - errors
    return [
        {
            "series": f'llmrouter_requests_total{{{SERIES},code="200"}}',
            "values": counter((PER_MINUTE, history), (ok, minutes), (PER_MINUTE, after)),
        },
        {
            "series": f'llmrouter_requests_total{{{SERIES},code="500"}}',
            "values": counter((0, history), (errors, minutes), (0, after)),
        },
        {
            "series": f'llmrouter_requests_total{{{SERIES},code="429"}}',
            "values": counter((PER_MINUTE // 3, history + minutes + after)),
        },
    ]


def alert(name: str, long: str, short: str, severity: str) -> dict[str, Any]:
    factors = {"1h": "14.4", "6h": "6", "1d": "3", "3d": "1"}
    budgets = {"availability": 0.001, "latency": 0.05}
    shares = {"1h": "2%", "6h": "5%", "1d": "10%", "3d": "10%"}
    threshold = float(factors[long]) * budgets[name]
    pct = f"{round(threshold * 100, 2):g}%"
    allowed = f"{budgets[name] * 100:g}%"
    what = {"availability": "Errors", "latency": "Slow requests"}[name]
    return {
        "exp_labels": {
            **objective_labels(POLICY, POLICY.spec.objectives[0 if name == "availability" else 1]),
            "team": "ml",
            "severity": severity,
            "long_window": long,
            "short_window": short,
        },
        "exp_annotations": {
            "summary": f"SLAPolicy team/acme objective {name}: error budget burning at over "
            f"{factors[long]}x in {long} and {short}",
            "description": f"{what} of tenant team/acme over the last {long} and {short} are "
            f"above {pct} of requests, against {allowed} allowed over 30d; at "
            f"{factors[long]}x the budget rate, {shares[long]} of the 30d budget goes in {long}.",
            "runbook_url": "r",
        },
    }


PAGE_1H = ("1h", "5m", "critical")
PAGE_6H = ("6h", "30m", "critical")
TICKET_1D = ("1d", "2h", "warning")
TICKET_3D = ("3d", "6h", "warning")


def at(minutes: int) -> str:
    return f"{HISTORY + minutes}m"


def run_promtool(tmp_path: Path, policy_: SLAPolicy, test: dict[str, Any]) -> None:
    (tmp_path / "rules.yaml").write_text(dump(rule_file([policy_])))
    check = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # Rules are evaluated every 5 minutes (scrapes stay at 1 minute): the alerts' timing is
    # checked to 5 minutes, and days of history take seconds instead of a minute.
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "5m", "tests": [test]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alerts_at(minutes: int, *expected: dict[str, Any]) -> dict[str, Any]:
    return {
        "eval_time": at(minutes),
        "alertname": "LLMRouterErrorBudgetBurn",
        "exp_alerts": list(expected),
    }


def test_a_2_percent_error_rate_fires_only_the_1h_page_after_43_minutes(
    tmp_path: Path,
) -> None:
    # 14.4 x 0.1 % = 1.44 %: the hour's ratio, 2 % x t/60, crosses it at t = 43.2 min.
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": requests(2, 90, after=60),
            "alert_rule_test": [
                alerts_at(0),
                alerts_at(40),
                alerts_at(45, alert("availability", *PAGE_1H)),
                alerts_at(90, alert("availability", *PAGE_1H)),
                # The errors stopped at 90: within 5 minutes the short window clears it.
                alerts_at(95),
                alerts_at(150),
            ],
        },
    )


def test_a_1_percent_error_rate_fires_only_the_6h_page(tmp_path: Path) -> None:
    # 6 x 0.1 % = 0.6 %: the 6h ratio, 1 % x t/360, crosses it at t = 216 min; the hour
    # never reaches 1.44 %, the day's 0.3 % would take 432 min.
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": requests(1, 240, after=60),
            "alert_rule_test": [
                alerts_at(60),
                alerts_at(215),
                alerts_at(220, alert("availability", *PAGE_6H)),
                alerts_at(240, alert("availability", *PAGE_6H)),
                alerts_at(275),
            ],
        },
    )


def test_a_0_2_percent_error_rate_fires_only_the_3d_ticket(tmp_path: Path) -> None:
    # 1 x 0.1 %: the 3-day ratio, 0.2 % x t/4320, crosses it at t = 2160 min (36 h); the
    # day's 0.3 % is never reached.
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": requests(0.2, 38 * 60, after=4 * 60),
            "alert_rule_test": [
                alerts_at(6 * 60),
                alerts_at(36 * 60 - 5),
                alerts_at(36 * 60 + 5, alert("availability", *TICKET_3D)),
                alerts_at(38 * 60, alert("availability", *TICKET_3D)),
                # The short window, 6h, falls under 0.1 % three hours after the errors stop.
                alerts_at(38 * 60 + 170, alert("availability", *TICKET_3D)),
                alerts_at(38 * 60 + 190),
            ],
        },
    )


def test_no_traffic_fires_nothing_and_records_no_nan(tmp_path: Path) -> None:
    flat = "0x300"
    series = [
        {"series": f'llmrouter_requests_total{{{SERIES},code="200"}}', "values": flat},
        {"series": f"llmrouter_request_duration_seconds_count{{{SERIES}}}", "values": flat},
        {
            "series": f'llmrouter_request_duration_seconds_bucket{{{SERIES},le="2.0"}}',
            "values": flat,
        },
    ]
    nan_or_any = [
        {"expr": f"{{__name__=~'llmrouter_slo:{name}'}}", "eval_time": "290m", "exp_samples": []}
        for name in ("error_ratio:.*", "error_budget_remaining")
    ]
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{**alerts_at(0), "eval_time": t} for t in ("30m", "290m")],
            "promql_expr_test": [
                *nan_or_any,
                # Still recorded: the objective, and that no events happened.
                {
                    "expr": "llmrouter_slo:events:increase1h",
                    "eval_time": "290m",
                    "exp_samples": [
                        {"labels": _labels("llmrouter_slo:events:increase1h", name), "value": 0}
                        for name in ("availability", "latency")
                    ],
                },
            ],
        },
    )


def _labels(metric: str, objective: str) -> str:
    labels = objective_labels(POLICY, POLICY.spec.objectives[0])
    labels["objective"] = objective
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_clean_traffic_without_any_5xx_series_is_a_zero_ratio_and_a_full_budget(
    tmp_path: Path,
) -> None:
    # prometheus_client creates the code="500" series only at the first error: until then
    # the error ratio must read 0, not "no data".
    series = requests(0, 10, after=10, history=0)[:1]
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {
                    "expr": f'{name}{{objective="availability"}}',
                    "eval_time": "15m",
                    "exp_samples": [{"labels": _labels(name, "availability"), "value": value}],
                }
                for name, value in (
                    ("llmrouter_slo:error_ratio:rate5m", 0),
                    ("llmrouter_slo:error_ratio:rate3d", 0),
                    ("llmrouter_slo:error_ratio:period", 0),
                    ("llmrouter_slo:error_budget_remaining", 1),
                    ("llmrouter_slo:objective", 0.999),
                )
            ],
        },
    )


def latency_series(
    slow_percent: float, minutes: int, after: int, history: int = HISTORY
) -> list[dict[str, str]]:
    slow = round(PER_MINUTE * slow_percent / 100)
    count = counter((PER_MINUTE, history + minutes + after))
    within = counter((PER_MINUTE, history), (PER_MINUTE - slow, minutes), (PER_MINUTE, after))
    return [
        {"series": f"llmrouter_request_duration_seconds_count{{{SERIES}}}", "values": count},
        {
            "series": f'llmrouter_request_duration_seconds_bucket{{{SERIES},le="2.0"}}',
            "values": within,
        },
    ]


def test_a_p95_latency_objective_pages_when_80_percent_are_slow(tmp_path: Path) -> None:
    # 14.4 x 5 % = 72 %: the hour's share of slow requests, 80 % x t/60, crosses it at 54 min.
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            "input_series": latency_series(80, 70, after=30),
            "alert_rule_test": [
                alerts_at(50),
                alerts_at(55, alert("latency", *PAGE_1H)),
                alerts_at(70, alert("latency", *PAGE_1H)),
                alerts_at(80),
            ],
        },
    )


def test_a_steady_4_percent_slow_never_alerts_a_p95_objective(tmp_path: Path) -> None:
    run_promtool(
        tmp_path,
        POLICY,
        {
            "interval": "1m",
            # Steady from the start: no clean history, which would only dilute it.
            "input_series": latency_series(4, 3 * 24 * 60, after=0, history=0),
            "alert_rule_test": [
                {**alerts_at(0), "eval_time": f"{m}m"} for m in (60, 6 * 60, 24 * 60, 3 * 24 * 60)
            ],
            "promql_expr_test": [
                {
                    # 4 % slow against 5 % allowed: a fifth of the budget is left (to float
                    # precision: promtool compares exactly).
                    "expr": "abs(llmrouter_slo:error_budget_remaining"
                    '{objective="latency"} - 0.2) < bool 1e-9',
                    "eval_time": "3d",
                    "exp_samples": [
                        {"labels": _labels("", "latency"), "value": 1},
                    ],
                }
            ],
        },
    )


@pytest.mark.parametrize(("guard", "fires"), [(60, False), (0, True)])
def test_too_little_traffic_pages_nobody(tmp_path: Path, guard: int, fires: bool) -> None:
    # Half of 48 requests an hour fail: far above every burn rate, but under 60 an hour.
    alerting = {"labels": {"team": "ml"}, "annotations": {"runbook_url": "r"}}
    series = [
        {"series": f'llmrouter_requests_total{{{SERIES},code="{code}"}}', "values": "0+0.4x140"}
        for code in (200, 500)
    ]
    expected = [alert("availability", *p) for p in (PAGE_1H, PAGE_6H, TICKET_1D, TICKET_3D)]
    run_promtool(
        tmp_path,
        policy(alerting={**alerting, "minRequestsPerHour": guard}),
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {**alerts_at(0, *(expected if fires else [])), "eval_time": "100m"}
            ],
        },
    )
