"""The pipelined Redis client of the request path, against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import hiredis
import pytest

from llmrouter.gateway.state.resp import (
    PipelinedRedis,
    RedisAddress,
    RedisReplyError,
    RedisUnavailable,
    encode,
    reply_error,
)
from tests.support.redis_server import RedisServer
from tests.support.serve import free_port


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    redis = PipelinedRedis(redis_url)
    yield redis
    await redis.close()


def test_commands_are_encoded_as_arrays_of_bulk_strings() -> None:
    assert encode((b"SET", "k", 12)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert encode(("é",)) == b"*1\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://10.0.0.5", RedisAddress(host="10.0.0.5")),
        ("redis://r:6380/2", RedisAddress(host="r", port=6380, db=2)),
        ("rediss://:s%40cret@r/0", RedisAddress(host="r", tls=True, password="s@cret")),
        ("redis://me:pw@r/1", RedisAddress(host="r", username="me", password="pw", db=1)),
        ("unix:///run/redis.sock?db=3", RedisAddress(path="/run/redis.sock", db=3)),
    ],
)
def test_urls(url: str, address: RedisAddress) -> None:
    assert RedisAddress.parse(url) == address


@pytest.mark.parametrize("url", ["http://r", "redis://r/zero", "redis://r:port/0"])
def test_bad_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(ValueError, match="redis"):
        RedisAddress.parse(url)


async def test_replies_come_back_to_their_commands_in_order(client: PipelinedRedis) -> None:
    replies = await asyncio.gather(*(client.execute("INCR", "n") for _ in range(500)))
    assert replies == list(range(1, 501))
    assert await client.execute("GET", "n") == b"500"
    assert await client.execute("GET", "missing") is None


async def test_an_error_reply_raises_and_leaves_the_connection_usable(
    client: PipelinedRedis,
) -> None:
    await client.execute("SET", "s", "text")
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        await client.execute("LPUSH", "s", "x")
    assert await client.execute("GET", "s") == b"text"


async def test_a_script_is_loaded_when_redis_does_not_know_it(client: PipelinedRedis) -> None:
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert await client.evalsha(script, ["c"], [2]) == 2
    await client.execute("SCRIPT", "FLUSH")  # as after a restart of Redis
    assert await client.evalsha(script, ["c"], [3]) == 5


async def test_unreachable_redis_fails_fast_and_reconnects_once_it_is_back() -> None:
    server = RedisServer()
    client = PipelinedRedis(server.url, timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        assert time.monotonic() - started < 0.5
        server.start()
        assert await client.execute("PING") == b"PONG"
        server.stop()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        server.start()
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.close()
        server.cleanup()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and reads, never answers: a hung Redis."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", free_port())
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_no_reply_in_time_fails_every_command_in_flight() -> None:
    async with silent_server() as port:
        client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout_s=0.4)
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.execute("PING") for _ in range(3)), return_exceptions=True
        )
        waited = time.monotonic() - started
        await client.close()
    assert all(isinstance(r, RedisUnavailable) for r in results)
    assert 0.4 <= waited < 1.0


async def test_a_busy_event_loop_is_not_taken_for_a_silent_redis(redis_url: str) -> None:
    client = PipelinedRedis(redis_url, timeout_s=0.2)
    try:
        await client.execute("PING")  # connected
        pending = asyncio.ensure_future(client.execute("INCR", "busy"))
        await asyncio.sleep(0)  # the command leaves
        time.sleep(0.6)  # the loop is stuck (overload) while the reply waits in the socket
        assert await pending == 1
    finally:
        await client.close()


@pytest.fixture(scope="module")
def password_redis() -> Iterator[RedisServer]:
    server = RedisServer(password="s3cret/pass")
    server.start()
    yield server
    server.cleanup()


async def test_password_and_database_from_the_url(password_redis: RedisServer) -> None:
    base = f"127.0.0.1:{password_redis.port}"
    client = PipelinedRedis(f"redis://:s3cret%2Fpass@{base}/3")
    try:
        await client.execute("SET", "where", "db3")
        assert await client.execute("GET", "where") == b"db3"
        await client.execute("SELECT", 0)  # the same connection, now on db 0
        assert await client.execute("GET", "where") is None
    finally:
        await client.close()
    wrong = PipelinedRedis(f"redis://:nope@{base}/0")
    with pytest.raises(RedisUnavailable, match=r"WRONGPASS|invalid"):
        await wrong.execute("PING")
    await wrong.close()


async def test_replies_of_a_redis_that_cannot_serve_now_are_outages(
    client: PipelinedRedis,
) -> None:
    # A real read-only replica (of nothing) answers every write with READONLY.
    await client.execute("REPLICAOF", "127.0.0.1", "1")
    try:
        with pytest.raises(RedisUnavailable, match="READONLY"):
            await client.execute("SET", "k", "v")
    finally:
        await client.execute("REPLICAOF", "NO", "ONE")
    await client.execute("SET", "k", "v")  # the same connection serves again
    # The others cannot be provoked cheaply; they are told apart the same way.
    for text in ("LOADING Redis is loading the dataset in memory", "BUSY Redis is busy", "OOM x"):
        assert isinstance(reply_error(hiredis.ReplyError(text)), RedisUnavailable)
    assert isinstance(reply_error(hiredis.ReplyError("WRONGTYPE x")), RedisReplyError)
