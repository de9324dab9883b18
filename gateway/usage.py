"""Token usage and cost of one request, and where finished requests are accounted."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llmrouter.gateway.config import Pricing

_MILLION = Decimal(1_000_000)
CHARS_PER_TOKEN = 4
"""How output is counted when a model server reports no usage: English text averages about
four characters a token with common tokenizers."""


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


def output_estimate(doc: Any) -> int:
    """Output tokens of a whole chat or completion answer, from its text."""
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        return 0
    chars = 0
    for choice in doc["choices"]:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            chars += _text_length(message.get("content"))
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    chars += _text_length(call["function"].get("arguments"))
        chars += _text_length(choice.get("text"))
    return math.ceil(chars / CHARS_PER_TOKEN)


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):  # content parts
        return sum(_text_length(part.get("text")) for part in value if isinstance(part, dict))
    return 0


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
