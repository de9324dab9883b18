"""Token usage and cost of one request, and where finished requests are accounted."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llmrouter.gateway.config import Pricing

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; None when absent or malformed."""
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", 0)
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(max(prompt, 0), max(completion, 0))

    def cost(self, pricing: Pricing) -> Decimal:
        return (
            self.input_tokens * pricing.input_per_million_usd
            + self.output_tokens * pricing.output_per_million_usd
        ) / _MILLION


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the gateway accounts for one finished request."""

    request_id: str
    tenant: str
    key_name: str
    model: str
    endpoint: str
    status: int
    usage: Usage
    cost_usd: Decimal
    duration_s: float
    ttft_s: float | None = None
    stream: bool = False
