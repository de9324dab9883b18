"""What the gateway's metrics promise to SLO rules: one fixed bucket set for latency and
time to first token, and which answers count against availability.

Latency objectives are written as "P % of requests under T", evaluated as
``bucket{le="T"} / count``: that is exact only when T is one of these boundaries, so the
set is fixed (changing it would silently break every objective written against it) and
SLAPolicy thresholds must name one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Seconds. Wide at the top because a long generation legitimately takes minutes."""


def counts_for_sli(status: int) -> bool:
    """Whether an answer is one of the events SLIs are computed over.

    A 4xx is the client's own doing (a bad request, a disallowed model, a limit it hit, a
    client that went away: 499), so it is neither good nor bad for the platform's
    objectives and is left out of both the availability ratio and the latency histograms.
    Everything else is an event; 5xx (gateway failures, model server failures, timeouts:
    504) are the bad ones for availability.
    """
    return not 400 <= status < 500


def is_error(status: int) -> bool:
    """A failure the gateway or a model server caused."""
    return status >= 500


def le_label(seconds: float | Decimal) -> str:
    """The ``le`` label value the gateway's histograms write for a bucket boundary
    (prometheus_client's Go-style float: 2 → ``2.0``); Prometheus 2.x matches it as text."""
    return str(floatToGoString(float(seconds)))  # type: ignore[no-untyped-call]


def bucket_for(seconds: float | Decimal) -> float | None:
    """The bucket boundary equal to ``seconds``, or None when there is none."""
    for b in LATENCY_BUCKETS:
        if Decimal(str(b)) == Decimal(str(seconds)):
            return b
    return None


WINDOW_HOURS: dict[str, Decimal] = {
    "5m": Decimal(5) / 60,
    "30m": Decimal("0.5"),
    "1h": Decimal(1),
    "2h": Decimal(2),
    "6h": Decimal(6),
    "1d": Decimal(24),
    "3d": Decimal(72),
}
BURN_RATE_WINDOWS = ("1h", "6h", "1d", "3d")


@dataclass(frozen=True)
class BurnAlert:
    """One window pair of the SRE Workbook's multiwindow, multi-burn-rate table."""

    long: str
    short: str
    budget_share: Decimal
    """Share of the whole window's budget this pair alerts on having spent in ``long``."""
    severity: str
    """``page`` or ``ticket``."""

    def factor(self, window_days: int) -> Decimal:
        """How many times the budget rate the error ratio must exceed."""
        return self.budget_share * window_days * 24 / WINDOW_HOURS[self.long]


BURN_ALERTS = (
    BurnAlert("1h", "5m", Decimal("0.02"), "page"),
    BurnAlert("6h", "30m", Decimal("0.05"), "page"),
    BurnAlert("1d", "2h", Decimal("0.10"), "ticket"),
    BurnAlert("3d", "6h", Decimal("0.10"), "ticket"),
)


def objective_status(
    name: str, budget: float, window_days: int, values: Mapping[str, float | None]
) -> dict[str, Any]:
    """An objective's compliance from counts. ``budget``: the share of events allowed to be
    bad; ``values``: ``events`` and ``errors`` over the window, ``ratio1h`` … ``ratio3d``
    error ratios (None: no sample, e.g. no traffic in that window).

    State: ``noData`` without events in the window; ``breached`` once the budget is spent;
    ``warning`` while an alert's long window burns faster than its factor; else ``ok``.
    """
    events, errors = values.get("events"), values.get("errors")
    burn_rates = {
        w: _round(ratio / budget) if (ratio := values.get(f"ratio{w}")) is not None else None
        for w in BURN_RATE_WINDOWS
    }
    status: dict[str, Any] = {
        "name": name,
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
