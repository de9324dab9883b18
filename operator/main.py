"""The operator's entry point for `kopf run`: importing it registers every handler."""

from __future__ import annotations

import secrets
import time
from typing import Any

import kopf

from llmrouter.operator.controllers import (
    compiler,
    experiment,
    modeldeployment,
    slapolicy,
    tenant,
    usage,
)

__all__ = ["compiler", "experiment", "modeldeployment", "slapolicy", "tenant", "usage"]

PEERING_LIFETIME_S = 30
"""How long a replica that died without a word counts as alive: the longest a standby
waits before it takes over (a replica that stops cleanly leaves at once)."""


def peering_priority(started_s: float, tiebreak: int) -> int:
    """Kopf runs only the replica of highest priority and freezes every replica when two
    share one, so each gets its own: the earlier started wins (a new pod of a rolling
    update waits instead of taking over mid-work), ties broken at random."""
    return (10**10 - int(started_s)) * 10**6 + tiebreak % 10**6


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 30  # warnings and errors become Kubernetes events
    settings.watching.server_timeout = 300
    settings.peering.standalone = False
    settings.peering.name = "llmrouter"
    settings.peering.mandatory = False
    settings.peering.priority = peering_priority(time.time(), secrets.randbelow(10**6))
    settings.peering.lifetime = PEERING_LIFETIME_S
