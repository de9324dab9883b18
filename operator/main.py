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
from llmrouter.operator.peering import PEERING_LIFETIME_S, peering_priority

__all__ = ["compiler", "experiment", "modeldeployment", "slapolicy", "tenant", "usage"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 30  # warnings and errors become Kubernetes events
    settings.watching.server_timeout = 300
    settings.peering.standalone = False
    settings.peering.name = "llmrouter"
    settings.peering.mandatory = False
    settings.peering.priority = peering_priority(time.time(), secrets.randbelow(10**6))
    settings.peering.lifetime = PEERING_LIFETIME_S
