"""The Experiment status the operator writes after each analysis: a verdict is kept once
reached, a new split starts afresh, and the policy routes through status only."""

from __future__ import annotations

import datetime
from typing import Any

from llmrouter.gateway.config import ExperimentMetric, ExperimentPolicy, ExperimentVariant
from llmrouter.gateway.experiments.report import build_report
from llmrouter.gateway.state import TrialStats
from llmrouter.operator.controllers.experiment import experiment_status

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


def policy(epoch: str = "e1") -> ExperimentPolicy:
    return ExperimentPolicy(
        id="ns/x",
        model="a",
        tenants=frozenset({"ns/t"}),
        unit="request",
        variants=(
            ExperimentVariant(name="control", model="a", weight=1),
            ExperimentVariant(name="b", model="b", weight=1),
        ),
        control="control",
        exposure_percent=100,
        epoch=epoch,
        primary=ExperimentMetric(name="feedback", direction="increase"),
        guardrails=(ExperimentMetric(name="errorRate", direction="decrease", margin=0.01),),
    )


def sums(n: int, errors: float, score: float) -> TrialStats:
    e, s = n * errors, n * score
    return TrialStats(
        n,
        {
            "errorRate": {"n": n, "m": e, "d": n, "mm": e, "dd": n, "md": e},
            "feedback": {"n": n, "m": s, "d": n, "mm": s * score, "dd": n, "md": s},
        },
    )


def status(
    previous: dict[str, Any],
    stats: dict[str, TrialStats],
    spec_policy: dict[str, str],
    epoch: str = "e1",
) -> dict[str, Any]:
    found = build_report(policy(epoch), stats, 60.0)
    return experiment_status(previous, found, spec_policy, NOW)


HARMFUL = {"control": sums(400, 0.0, 3.0), "b": sums(400, 1.0, 3.0)}
QUIET = {"control": sums(10, 0.0, 3.0), "b": sums(10, 0.0, 3.0)}


def test_harm_rolls_back_through_status_and_the_verdict_stays() -> None:
    first = status({}, HARMFUL, {"onHarm": "Rollback"})
    assert (first["phase"], first["routedTo"]) == ("RolledBack", "control")
    assert first["verdict"]["decision"] == "Rollback" and first["verdict"]["decidedAt"]
    conditions = {c["type"]: c["status"] for c in first["conditions"]}
    assert conditions == {
        "Ready": "True",
        "SampleRatioMismatch": "False",
        "GuardrailBreached": "True",
        "Concluded": "True",
    }
    later = status(first, QUIET, {"onHarm": "Rollback"})  # figures change, the verdict does not
    assert later["verdict"] == first["verdict"] and later["routedTo"] == "control"


def test_report_only_policies_route_nothing() -> None:
    found = status({}, HARMFUL, {"onHarm": "Report"})
    assert (found["phase"], found["routedTo"]) == ("Concluded", None)


def test_a_new_split_starts_a_new_analysis() -> None:
    first = status({}, HARMFUL, {"onHarm": "Rollback"})
    fresh = status(first, QUIET, {"onHarm": "Rollback"}, epoch="e2")
    assert fresh["epoch"] == "e2" and fresh["routedTo"] is None
    assert fresh["verdict"]["decision"] == "Running" and fresh["phase"] == "Running"


def test_a_win_is_promoted_when_asked() -> None:
    better = {"control": sums(3000, 0.0, 3.0), "b": sums(3000, 0.0, 4.0)}
    for_stats = {
        k: TrialStats(
            v.units,
            {**v.sums, "feedback": {**v.sums["feedback"], "mm": v.sums["feedback"]["mm"] * 1.05}},
        )
        for k, v in better.items()
    }
    found = status({}, for_stats, {"onWin": "Promote"})
    assert found["verdict"]["decision"] == "ShipVariant", found["verdict"]
    assert (found["phase"], found["routedTo"]) == ("Promoted", "b")
    assert found["lift"] is not None and found["lift"].startswith("+")
