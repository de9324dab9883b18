"""How to talk to each kind of model server: URLs, headers, and request and response shapes.

The gateway speaks the OpenAI API to clients; an adapter turns a client's request into the
provider's and the provider's answer (whole or streamed) back into OpenAI's shape.
"""

from __future__ import annotations

import functools
from typing import Protocol

from llmrouter.gateway.config import Upstream
from llmrouter.gateway.openai_request import ModelRequest, Operation


class StreamTranslator(Protocol):
    def feed(self, event: bytes) -> list[bytes]:
        """OpenAI server-sent events for one provider event (maybe none)."""


class Adapter(Protocol):
    def url(self, upstream: Upstream, operation: Operation) -> str: ...

    def headers(self, secret: str | None) -> dict[str, str]: ...

    def body(self, req: ModelRequest, upstream: Upstream) -> bytes: ...

    def response(self, raw: bytes, req: ModelRequest) -> bytes: ...

    def stream(self, req: ModelRequest) -> StreamTranslator | None:
        """None when the provider already streams OpenAI's events."""


@functools.cache
def adapter_for(protocol: str) -> Adapter:
    """The adapter of a protocol; adapters hold no state, so one of each serves every call."""
    from llmrouter.gateway.providers.anthropic import AnthropicAdapter
    from llmrouter.gateway.providers.openai import AzureOpenAIAdapter, OpenAIAdapter

    adapters: dict[str, Adapter] = {
        "openai": OpenAIAdapter(),
        "azure-openai": AzureOpenAIAdapter(),
        "anthropic": AnthropicAdapter(),
    }
    return adapters[protocol]
