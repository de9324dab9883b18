"""What the gateway's metrics promise to SLO rules: one fixed bucket set for latency and
time to first token, and which answers count against availability.

Latency objectives are written as "P % of requests under T", evaluated as
``bucket{le="T"} / count``: that is exact only when T is one of these boundaries, so the
set is fixed (changing it would silently break every objective written against it) and
SLAPolicy thresholds must name one of them.
"""

from __future__ import annotations

from decimal import Decimal

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
