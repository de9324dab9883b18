"""The operator's entry point for `kopf run`: importing it registers every handler."""

from __future__ import annotations

from typing import Any

import kopf

from llmrouter.operator.controllers import compiler, modeldeployment, tenant, usage

__all__ = ["compiler", "modeldeployment", "tenant", "usage"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 30  # warnings and errors become Kubernetes events
    settings.watching.server_timeout = 300
    settings.peering.standalone = False
    settings.peering.name = "llmrouter"
    settings.peering.mandatory = False
