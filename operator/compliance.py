"""Compliance of an SLAPolicy's objectives from event counts: plain arithmetic, no I/O.

State of an objective:

- ``noData``: no events in the window;
- ``breached``: the error budget of the window is spent (remaining below 0);
- ``warning``: not yet, but an alert's long window burns faster than its factor (the rate
  at which the budget would run out well before the window ends);
- ``ok``: otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from llmrouter.operator.api.slapolicy import Objective, SLAPolicy
from llmrouter.operator.slo import BURN_ALERTS, BURN_RATE_WINDOWS, error_budget


def objective_status(
    o: Objective, window_days: int, values: Mapping[str, float | None]
) -> dict[str, Any]:
    """``values``: ``events`` and ``errors`` over the window, ``ratio1h`` … ``ratio3d``
    error ratios (None: no sample, e.g. no traffic in that window)."""
    budget = float(error_budget(o))
    events, errors = values.get("events"), values.get("errors")
    burn_rates = {
        w: _round(ratio / budget) if (ratio := values.get(f"ratio{w}")) is not None else None
        for w in BURN_RATE_WINDOWS
    }
    status: dict[str, Any] = {
        "name": o.name,
        "burnRates": {w: r for w, r in burn_rates.items() if r is not None},
    }
    if not events:
        return {**status, "state": "noData", "totalEvents": events or 0.0}
    bad = min(max(errors or 0.0, 0.0), events)
    remaining = 1 - (bad / events) / budget
    factors = {a.long: float(a.factor(window_days)) for a in BURN_ALERTS}
    burning = any(r is not None and r > factors[w] for w, r in burn_rates.items())
    state = "breached" if remaining < 0 else "warning" if burning else "ok"
    return {
        **status,
        "sli": _round(1 - bad / events),
        "errorBudgetRemaining": _round(remaining),
        "goodEvents": round(events - bad, 3),
        "totalEvents": round(events, 3),
        "state": state,
    }


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def policy_summary(objectives: list[dict[str, Any]]) -> dict[str, Any]:
    """``compliant`` (None while no objective has data) and ``budget``: the lowest budget
    remaining, in percent, for the printer column."""
    known = [o for o in objectives if o["state"] != "noData"]
    if not known:
        return {"compliant": None, "budget": None}
    lowest = min(Decimal(str(o["errorBudgetRemaining"])) for o in known)
    return {
        "compliant": all(o["state"] != "breached" for o in known),
        "budget": f"{(lowest * 100).quantize(Decimal('0.1'))}%",
    }


def state_changes(
    previous: list[dict[str, Any]] | None, current: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    """(objective, old state, new state) for each objective whose state moved; an objective
    seen for the first time moves from noData."""
    before = {o.get("name"): o.get("state", "noData") for o in previous or []}
    return [
        (o["name"], before.get(o["name"], "noData"), o["state"])
        for o in current
        if before.get(o["name"], "noData") != o["state"]
    ]


def evaluate(
    policy: SLAPolicy, values: Mapping[str, Mapping[str, float | None]]
) -> list[dict[str, Any]]:
    """Every objective's status; ``values`` by objective name."""
    return [
        objective_status(o, policy.spec.window_days, values.get(o.name, {}))
        for o in policy.spec.objectives
    ]
