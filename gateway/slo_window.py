"""A gateway process's own SLO counts: events and bad events per (SLAPolicy, objective) in
5-minute buckets over the longest window, and compliance read from them.

This is what ``GET /admin/slo`` answers from where no Prometheus is asked. It is an
approximation: the counts start when the process starts, are this process's only (with
``--workers N`` each worker keeps its own), and windows are whole 5-minute buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from llmrouter.gateway.sli import (
    BURN_RATE_WINDOWS,
    WINDOW_HOURS,
    counts_for_sli,
    is_error,
    objective_status,
)
from llmrouter.gateway.slo_config import SLOObjective, SLOPolicy
from llmrouter.gateway.usage import RequestRecord

BUCKET_S = 300


def _event(o: SLOObjective, rec: RequestRecord) -> tuple[bool, bool]:
    """(an event of the objective, a bad one), the way the rules count from the metrics."""
    if not counts_for_sli(rec.status):
        return False, False
    if o.type == "availability":
        return True, is_error(rec.status)
    seconds = rec.duration_s if o.type == "latency" else rec.ttft_s
    if seconds is None:
        return False, False  # no first token to time: not a TTFT event (as the histogram)
    assert o.threshold_s is not None
    return True, seconds > o.threshold_s


Snapshot = dict[str, dict[str, dict[str, list[int]]]]
"""policy id → objective → bucket number (as text, for JSON) → [events, bad]."""


class SLOCounts:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], dict[int, list[int]]] = {}

    def snapshot(self) -> Snapshot:
        """The raw counts, for the operator to sum across gateway pods."""
        out: Snapshot = {}
        for (policy_id, objective), counts in self._buckets.items():
            out.setdefault(policy_id, {})[objective] = {
                str(b): list(pair) for b, pair in counts.items()
            }
        return out

    @classmethod
    def merged(cls, snapshots: Iterable[Snapshot]) -> SLOCounts:
        """The sum of several processes' counts."""
        total = cls()
        for snap in snapshots:
            for policy_id, objectives in snap.items():
                for objective, counts in objectives.items():
                    mine = total._buckets.setdefault((policy_id, objective), {})
                    for b, (events, bad) in counts.items():
                        pair = mine.setdefault(int(b), [0, 0])
                        pair[0] += int(events)
                        pair[1] += int(bad)
        return total

    def observe(self, slos: Mapping[str, SLOPolicy], rec: RequestRecord, now: float) -> None:
        bucket = int(now // BUCKET_S)
        for policy_id, policy in slos.items():
            if policy.tenant != rec.tenant or (policy.models and rec.model not in policy.models):
                continue
            for o in policy.objectives:
                event, bad = _event(o, rec)
                if not event:
                    continue
                counts = self._buckets.setdefault((policy_id, o.name), {})
                pair = counts.get(bucket)
                if pair is None:
                    # Once per bucket, not per request: old buckets go as a new one starts.
                    self._prune(counts, bucket, policy.window_days)
                    pair = counts[bucket] = [0, 0]
                pair[0] += 1
                pair[1] += bad

    @staticmethod
    def _prune(counts: dict[int, list[int]], bucket: int, window_days: int) -> None:
        oldest = bucket - window_days * 86400 // BUCKET_S
        for b in [b for b in counts if b < oldest]:
            del counts[b]

    def _sum(self, key: tuple[str, str], now: float, seconds: float) -> tuple[int, int]:
        last = int(now // BUCKET_S)
        first = last - int(seconds // BUCKET_S) + 1
        events = bad = 0
        for b, (e, x) in self._buckets.get(key, {}).items():
            if first <= b <= last:
                events += e
                bad += x
        return events, bad

    def report(self, policy_id: str, policy: SLOPolicy, now: float) -> list[dict[str, Any]]:
        """Each objective's status, as the operator writes it from Prometheus."""
        out = []
        for o in policy.objectives:
            key = (policy_id, o.name)
            events, bad = self._sum(key, now, policy.window_days * 86400)
            values: dict[str, float | None] = {"events": float(events), "errors": float(bad)}
            for w in BURN_RATE_WINDOWS:
                e, x = self._sum(key, now, float(WINDOW_HOURS[w] * 3600))
                values[f"ratio{w}"] = x / e if e else None
            budget = float((100 - Decimal(o.objective_percent)) / 100)
            out.append(objective_status(o.name, budget, policy.window_days, values))
        return out
