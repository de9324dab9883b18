"""The response cache: exact matches of deterministic requests, per tenant and model.

A request is cached when it cannot stream and is deterministic (``temperature: 0``, or
embeddings), or when the client opts in with ``x-llmrouter-cache: use``; the client opts out
with ``x-llmrouter-cache: bypass`` or ``Cache-Control: no-cache``. The key holds the tenant,
so an answer never crosses tenants. A hit is answered without calling a model and costs
nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

import orjson

from llmrouter.gateway.openai_request import ModelRequest, Operation
from llmrouter.gateway.state.resp import PipelinedRedis, RedisReplyError, RedisUnavailable

CACHE_HEADER = "x-llmrouter-cache"
_IGNORED_FIELDS = ("user", "metadata", "stream", "stream_options")


def cacheable(req: ModelRequest, headers: Mapping[str, str]) -> bool:
    choice = headers.get(CACHE_HEADER, "").lower()
    if choice == "bypass" or "no-cache" in headers.get("Cache-Control", ""):
        return False
    if req.stream:
        return False
    if choice == "use":
        return True
    return req.operation is Operation.EMBEDDINGS or req.body.get("temperature") == 0


def cache_key(tenant: str, model: str, req: ModelRequest) -> str:
    body = {k: v for k, v in req.body.items() if k not in _IGNORED_FIELDS and k != "model"}
    canonical = orjson.dumps(
        [tenant, model, req.operation.value, body], option=orjson.OPT_SORT_KEYS
    )
    return "llmrouter:cache:" + hashlib.sha256(canonical).hexdigest()


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """Least recently used entries first out, past ``max_bytes`` of keys and values.

    Bounded in bytes, not entries: entries run from a few bytes to the largest cacheable
    response (``cache_max_bytes``), so a count bounds nothing the host can plan for."""

    ENTRY_OVERHEAD = 200
    """Bytes an entry costs besides its key and value (dict slot, tuple, bytes headers)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _cost(self, key: str, value: bytes) -> int:
        return len(key) + len(value) + self.ENTRY_OVERHEAD

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= self._cost(key, value)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires_at, value = found
        if expires_at <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        cost = self._cost(key, value)
        if cost > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._bytes += cost
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCache:
    """Shared by every replica. A cache that cannot answer is a miss, never an error."""

    def __init__(self, url: str, timeout_s: float = 0.2) -> None:
        self._redis = PipelinedRedis(url, timeout_s=timeout_s)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.execute(b"GET", key)
        except (RedisUnavailable, RedisReplyError):
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with contextlib.suppress(RedisUnavailable, RedisReplyError):
            await self._redis.execute(b"SET", key, value, b"PX", max(1, int(ttl_s * 1000)))

    async def close(self) -> None:
        await self._redis.close()
