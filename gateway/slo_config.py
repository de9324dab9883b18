"""The part of an SLAPolicy a gateway counts against: compiled into GatewayConfig.slos."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class SLOObjective(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: Literal["availability", "latency", "ttft"]
    objective_percent: str
    """Share of good events promised, in percent, as a decimal string: "99.9"."""
    threshold_s: float | None = None
    """latency, ttft: a histogram bucket boundary."""


class SLOPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    """Tenant id, ``namespace/name``."""
    models: tuple[str, ...] = ()
    """Model names as the gateway counts them; empty: all."""
    window_days: int
    objectives: tuple[SLOObjective, ...]
