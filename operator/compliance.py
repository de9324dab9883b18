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
from typing import Any

from llmrouter.gateway import sli
from llmrouter.operator.api.slapolicy import Objective, SLAPolicy
from llmrouter.operator.slo import error_budget


def objective_status(
    o: Objective, window_days: int, values: Mapping[str, float | None]
) -> dict[str, Any]:
    """``values``: ``events`` and ``errors`` over the window, ``ratio1h`` … ``ratio3d``
    error ratios (None: no sample, e.g. no traffic in that window)."""
    return sli.objective_status(o.name, float(error_budget(o)), window_days, values)


def policy_summary(objectives: list[dict[str, Any]]) -> dict[str, Any]:
    """``compliant`` (None while no objective has data) and ``budget``: the lowest budget
    remaining, in percent, for the printer column."""
    return sli.policy_summary(objectives)


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
