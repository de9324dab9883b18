"""The official openai SDK → the gateway → a real llama.cpp llama-server (tiny model)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from tests.e2e.conftest import KEY
from tests.support.llama import LlamaServer

pytestmark = pytest.mark.e2e


def client(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=60)


async def usage_total(gateway: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway}/admin/usage", headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        total: dict[str, object] = (await resp.json())["total"]
        return total


async def test_chat_records_usage(gateway: str) -> None:
    reply = await client(gateway).chat.completions.create(
        model="chat", max_tokens=16, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    total = await usage_total(gateway)
    assert total["input_tokens"] == reply.usage.prompt_tokens
    assert total["output_tokens"] == reply.usage.completion_tokens


async def test_stream_relays_chunks_as_generated_and_records_usage(gateway: str) -> None:
    stream = await client(gateway).chat.completions.create(
        model="tiny",
        max_tokens=48,
        stream=True,
        messages=[{"role": "user", "content": "Tell me a story"}],
    )
    content_chunks = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            content_chunks.append(time.monotonic())
    ended = time.monotonic()
    assert len(content_chunks) >= 2
    assert content_chunks[0] < ended
    total = await usage_total(gateway)
    assert isinstance(total["output_tokens"], int) and total["output_tokens"] > 0
    assert total["requests"] == 1


async def test_completions(gateway: str) -> None:
    reply = await client(gateway).completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=8
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert isinstance(reply.choices[0].text, str)


async def test_embeddings(gateway: str) -> None:
    reply = await client(gateway).embeddings.create(model="tiny-embed", input=["hello", "world"])
    assert len(reply.data) == 2
    assert len(reply.data[0].embedding) == 64  # the tiny model's width
    assert reply.data[0].embedding != reply.data[1].embedding


async def test_eight_concurrent_requests_on_four_slots_are_all_answered(
    gateway: str, llama_chat: LlamaServer
) -> None:
    c = client(gateway)

    async def one(i: int) -> int:
        reply = await c.chat.completions.create(
            model="tiny", max_tokens=32, messages=[{"role": "user", "content": f"request {i}"}]
        )
        assert reply.usage is not None
        return reply.usage.completion_tokens

    tokens = await asyncio.gather(*(one(i) for i in range(8)))
    assert len(tokens) == 8 and all(t > 0 for t in tokens)
    async with (
        aiohttp.ClientSession() as http,
        http.get(llama_chat.url.removesuffix("/v1") + "/metrics") as resp,
    ):
        metrics = await resp.text()
    assert "llamacpp:requests_processing" in metrics
