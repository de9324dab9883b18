"""Status building blocks shared by every kind."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrouter.operator.api.common import SpecModel


class Condition(SpecModel):
    """A Kubernetes-style condition (type, status, reason, message)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class CommonStatus(SpecModel):
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
