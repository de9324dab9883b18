"""Where signed checkpoints are kept: apart from the log, where its writer cannot rewrite
them. A file opened for appending only (give it its own volume, or ``chattr +a``), and a
Redis list pushed to with RPUSH (a Redis user allowed ``+rpush`` alone cannot take them back).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from llmrouter.gateway.state.resp import PipelinedRedis

REDIS_LIST = "llmrouter:audit:checkpoints"


class CheckpointStore(Protocol):
    name: str

    async def add(self, line: bytes) -> None: ...

    async def close(self) -> None: ...


class CheckpointFile:
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def add_now(self, line: bytes) -> None:
        # One write of one whole line: processes sharing the file never interleave within it.
        os.write(self._fd, line + b"\n")
        os.fsync(self._fd)

    async def add(self, line: bytes) -> None:
        import asyncio

        await asyncio.to_thread(self.add_now, line)

    async def close(self) -> None:
        os.close(self._fd)


class RedisCheckpoints:
    def __init__(self, url: str, key: str = REDIS_LIST) -> None:
        self.name = f"redis list {key}"
        self.key = key
        self._redis = PipelinedRedis(url, timeout_s=2.0)

    async def add(self, line: bytes) -> None:
        await self._redis.execute("RPUSH", self.key, line)

    async def close(self) -> None:
        await self._redis.close()


async def read_redis(url: str, key: str = REDIS_LIST) -> list[bytes]:
    redis = PipelinedRedis(url, timeout_s=5.0)
    try:
        found = await redis.execute("LRANGE", key, 0, -1)
    finally:
        await redis.close()
    return [bytes(item) for item in found]
