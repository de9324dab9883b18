"""The official anthropic SDK → the gateway's /v1/messages → a real llama-server."""

from __future__ import annotations

import anthropic
import pytest

from tests.e2e.conftest import KEY

pytestmark = pytest.mark.e2e


async def test_messages_plain_and_streamed(gateway: str) -> None:
    # Retries: on a loaded machine the gateway's first health poll can time out.
    client = anthropic.AsyncAnthropic(base_url=gateway, api_key=KEY, max_retries=2, timeout=60)
    message = await client.messages.create(
        model="chat",
        max_tokens=8,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8
    async with client.messages.stream(
        model="chat", max_tokens=8, messages=[{"role": "user", "content": "Tell me a story"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert final.usage.output_tokens > 0
    assert "".join(b.text for b in final.content if b.type == "text") == text
