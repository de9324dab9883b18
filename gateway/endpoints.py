"""Endpoint health and choice: circuit breakers and least-loaded balancing, no I/O.

Every model server a route can use is an Endpoint with a breaker:

    closed ──(failure_threshold failures in a row)──► open ──(cooldown)──► half-open
       ▲                                                 ▲                    │
       └──────────────(the probe request succeeds)───────┴──(the probe fails)─┘

In half-open, one request at a time goes through as a probe. Choice among usable endpoints
is by load: requests this gateway has in flight there, or what the server itself reports
(llama-server's processing + deferred requests) when that is higher, as a share of the
server's slots; ties go to the lower latency average.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class BreakerSettings:
    failure_threshold: int = 5
    """Consecutive failures that open the breaker."""
    cooldown_s: float = 10.0
    """How long an open breaker refuses before letting a probe through."""


@dataclass
class Endpoint:
    model: str
    url: str
    slots: int | None = None
    """Concurrent requests the server runs at once (llama-server --parallel); None: unknown."""
    settings: BreakerSettings = field(default_factory=BreakerSettings)
    in_flight: int = 0
    reported_load: int | None = None
    """Requests the server says it is processing or deferring (None: not reported)."""
    reachable: bool = True
    """False while the server's own health check fails."""
    pollable: bool = False
    """A llama-server whose /metrics and /health the gateway polls."""
    ewma_latency_s: float = 0.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    total_failures: int = 0
    total_successes: int = 0

    def usable(self, now: float) -> bool:
        if not self.reachable:
            return False
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.settings.cooldown_s
        if self.state is BreakerState.HALF_OPEN:
            return not self.probing
        return True

    def load(self) -> float:
        busy = max(self.in_flight, self.reported_load or 0)
        return busy / self.slots if self.slots else float(busy)

    def begin(self, now: float) -> None:
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.settings.cooldown_s:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            self.probing = True
        self.in_flight += 1

    def succeeded(self, latency_s: float) -> None:
        self.in_flight -= 1
        self.total_successes += 1
        self.failures = 0
        self.probing = False
        self.state = BreakerState.CLOSED
        alpha = 0.3
        self.ewma_latency_s = (
            latency_s
            if not self.ewma_latency_s
            else alpha * latency_s + (1 - alpha) * self.ewma_latency_s
        )

    def failed(self, now: float) -> None:
        self.in_flight -= 1
        self.total_failures += 1
        self.failures += 1
        was_probe = self.probing
        self.probing = False
        if was_probe or self.failures >= self.settings.failure_threshold:
            self.state = BreakerState.OPEN
            self.opened_at = now

    def abandoned(self) -> None:
        """The request ended without saying anything about the server (client went away)."""
        self.in_flight -= 1
        self.probing = False

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "url": self.url,
            "state": self.state.value,
            "usable": self.usable(now),
            "reachable": self.reachable,
            "in_flight": self.in_flight,
            "reported_load": self.reported_load,
            "slots": self.slots,
            "consecutive_failures": self.failures,
            "failures": self.total_failures,
            "successes": self.total_successes,
            "ewma_latency_ms": round(self.ewma_latency_s * 1000, 3),
        }


Strategy = Literal["least-loaded", "round-robin"]
_turns: itertools.count[int] = itertools.count()


def choose(
    endpoints: list[Endpoint],
    now: float,
    exclude: set[str] | None = None,
    rng: random.Random | None = None,
    strategy: Strategy = "least-loaded",
) -> Endpoint | None:
    """The least loaded usable endpoint (or the next in turn, for round-robin), or None
    when none can take a request."""
    candidates = [e for e in endpoints if e.usable(now) and e.url not in (exclude or set())]
    if not candidates:
        return None
    # A probe goes first: an endpoint whose cooldown ended must be tried to come back.
    probes = [e for e in candidates if e.state is not BreakerState.CLOSED]
    if probes:
        return probes[0]
    if strategy == "round-robin":
        return candidates[next(_turns) % len(candidates)]
    best = min(e.load() for e in candidates)
    tied = [e for e in candidates if e.load() == best]
    fastest = min(e.ewma_latency_s for e in tied)
    tied = [e for e in tied if e.ewma_latency_s == fastest]
    return (rng or random).choice(tied)
