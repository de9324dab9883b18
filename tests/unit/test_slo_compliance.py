"""Compliance maths, and the figures read from a fake Prometheus HTTP API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.metrics_listener import metrics_app
from llmrouter.gateway.usage import RequestRecord, Usage
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.compile_slos import compile_slos
from llmrouter.operator.compliance import (
    evaluate,
    objective_status,
    policy_summary,
    state_changes,
)
from llmrouter.operator.gateway_counts import GatewayCountsError, gateway_objectives
from llmrouter.operator.prometheus import PrometheusError, objective_values
from llmrouter.operator.slo import objective_queries
from tests.support.serve import serving


def policy(window: str = "30d") -> SLAPolicy:
    return SLAPolicy.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "SLAPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {
                "tenant": "acme",
                "window": window,
                "objectives": [
                    {"name": "availability", "type": "availability", "target": "99.9"},
                    {"name": "latency", "type": "latency", "percentile": 95, "threshold": "2s"},
                ],
            },
        }
    )


AVAILABILITY = policy().spec.objectives[0]


def test_half_the_budget_spent_and_calm_burn_rates_is_ok() -> None:
    values = {"events": 100_000.0, "errors": 50.0, "ratio1h": 0.0005, "ratio6h": None}
    assert objective_status(AVAILABILITY, 30, values) == {
        "name": "availability",
        "sli": 0.9995,
        "errorBudgetRemaining": 0.5,
        "goodEvents": 99_950.0,
        "totalEvents": 100_000.0,
        "burnRates": {"1h": 0.5},  # 6h had no traffic: no figure rather than 0
        "state": "ok",
    }


def test_an_overspent_budget_is_breached_and_negative() -> None:
    status = objective_status(AVAILABILITY, 30, {"events": 1000.0, "errors": 3.0})
    assert status["errorBudgetRemaining"] == -2.0
    assert status["sli"] == 0.997
    assert status["state"] == "breached"


@pytest.mark.parametrize(
    ("window", "ratio", "state"),
    [
        ("1h", 0.0145, "warning"),  # above 14.4 x 0.1 %
        ("1h", 0.0143, "ok"),
        ("3d", 0.0011, "warning"),  # above 1 x
        ("3d", 0.00095, "ok"),
    ],
)
def test_a_long_window_burning_faster_than_its_alert_is_a_warning(
    window: str, ratio: float, state: str
) -> None:
    values = {"events": 1e6, "errors": 10.0, f"ratio{window}": ratio}
    assert objective_status(AVAILABILITY, 30, values)["state"] == state


def test_28_days_have_their_own_factors() -> None:
    values = {"events": 1e6, "errors": 10.0, "ratio1h": 0.0139}
    assert objective_status(AVAILABILITY, 30, values)["state"] == "ok"  # under 14.4 x
    assert objective_status(AVAILABILITY, 28, values)["state"] == "warning"  # over 13.44 x


def test_no_traffic_is_no_data_not_a_perfect_score() -> None:
    for values in ({}, {"events": 0.0, "errors": 0.0}):
        status = objective_status(AVAILABILITY, 30, values)
        assert status["state"] == "noData" and "sli" not in status
    assert policy_summary([{"name": "a", "state": "noData"}]) == {
        "compliant": None,
        "budget": None,
    }


def test_the_summary_is_the_worst_objective() -> None:
    objectives: list[dict[str, Any]] = [
        {"name": "a", "state": "ok", "errorBudgetRemaining": 0.5},
        {"name": "b", "state": "breached", "errorBudgetRemaining": -0.25},
        {"name": "c", "state": "noData"},
    ]
    assert policy_summary(objectives) == {"compliant": False, "budget": "-25.0%"}
    assert policy_summary(objectives[:1]) == {"compliant": True, "budget": "50.0%"}


def test_state_changes_are_reported_once() -> None:
    before = [{"name": "a", "state": "ok"}, {"name": "b", "state": "ok"}]
    after = [{"name": "a", "state": "breached"}, {"name": "b", "state": "ok"}]
    assert state_changes(before, after) == [("a", "ok", "breached")]
    assert state_changes(after, after) == []
    assert state_changes(None, [{"name": "a", "state": "ok"}]) == [("a", "noData", "ok")]


class FakePrometheus:
    """Answers /api/v1/query from a table of PromQL → value; records what was asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/api/v1/query", self.query)

    async def query(self, request: web.Request) -> web.Response:
        promql = request.query["query"]
        self.asked.append(promql)
        answer = self.answers.get(promql)
        if answer == "error":
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400
            )
        result = [] if answer is None else [{"metric": {}, "value": [1.0, str(answer)]}]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )


async def test_status_from_a_fake_prometheus() -> None:
    p = policy()
    availability = objective_queries(p, p.spec.objectives[0])
    latency = objective_queries(p, p.spec.objectives[1])
    answers = {
        availability["events"]: 200_000,
        availability["errors"]: 300,
        availability["ratio1h"]: 0.02,
        availability["ratio6h"]: 0.004,
        latency["events"]: 200_000,
        latency["errors"]: 2_000,
        latency["ratio1h"]: "NaN",  # what an unguarded 0/0 gives: treated as no sample
    }
    fake = FakePrometheus(answers)
    async with serving(fake.app) as url:
        values = await objective_values(url, p)
    assert sorted(fake.asked) == sorted([*availability.values(), *latency.values()])
    objectives = evaluate(p, values)
    assert objectives[0] == {
        "name": "availability",
        "sli": 0.9985,
        "errorBudgetRemaining": -0.5,
        "goodEvents": 199_700.0,
        "totalEvents": 200_000.0,
        "burnRates": {"1h": 20.0, "6h": 4.0},
        "state": "breached",
    }
    assert objectives[1]["state"] == "ok"
    assert objectives[1]["errorBudgetRemaining"] == 0.8
    assert objectives[1]["burnRates"] == {}


async def test_a_query_prometheus_refuses_is_an_error_naming_it() -> None:
    p = policy()
    fake = FakePrometheus({objective_queries(p, p.spec.objectives[0])["events"]: "error"})
    async with serving(fake.app) as url:
        with pytest.raises(PrometheusError, match="HTTP 400: parse error"):
            await objective_values(url, p)
    with pytest.raises(PrometheusError, match=r"127\.0\.0\.1:9"):
        await objective_values("http://127.0.0.1:9", p, timeout_s=2)


async def test_status_from_the_gateways_own_counts_summed_across_pods() -> None:
    p = policy()
    [(policy_id, slo)] = compile_slos([p]).items()
    now = 1_800_000_000.0
    pods = [GatewayMetrics(), GatewayMetrics()]
    # Pod one: 50 answers, 1 failed; pod two: 50 answers, 2 failed, 10 of them slow.
    for i in range(50):
        pods[0].slo.observe({policy_id: slo}, record(502 if i == 0 else 200, 0.1), now)
        pods[1].slo.observe(
            {policy_id: slo}, record(503 if i < 2 else 200, 3.0 if i < 10 else 0.1), now
        )
    pods[1].slo.observe({policy_id: slo}, record(429, 9.0), now)  # the tenant's own
    async with serving(metrics_app(pods[0])) as one, serving(metrics_app(pods[1])) as two:
        down = "http://127.0.0.1:9"
        objectives, answered = await gateway_objectives([one, two, down], p, now=now)
    assert answered == 2
    availability, latency = objectives
    assert (availability["totalEvents"], availability["goodEvents"]) == (100, 97)
    assert availability["errorBudgetRemaining"] == -29.0  # 3 % against 0.1 %
    assert availability["burnRates"] == {"1h": 30.0, "6h": 30.0, "1d": 30.0, "3d": 30.0}
    assert availability["state"] == "breached"
    assert (latency["totalEvents"], latency["goodEvents"]) == (100, 90)
    assert latency["errorBudgetRemaining"] == -1.0  # 10 % slow against 5 %
    with pytest.raises(GatewayCountsError, match="no gateway answered of 1"):
        await gateway_objectives([down], p, now=now)


def record(status: int, duration_s: float) -> RequestRecord:
    return RequestRecord(
        "r", "team/acme", "k", "llama", "chat", status, Usage(), Decimal(0), duration_s
    )
