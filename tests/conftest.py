from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from llmrouter.gateway.app import create_app
from llmrouter.gateway.credentials import EnvCredentials
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import PROVIDER_TOKEN, write_config
from tests.support.fake_upstream import FakeUpstream, UpstreamThread
from tests.support.redis_server import RedisServer
from tests.support.serve import serving

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running Redis, emptied for this test."""
    if redis_server.proc is None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    thread = UpstreamThread()
    fake = thread.start()
    yield fake
    thread.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def config_files(tmp_path: Path, upstream: FakeUpstream) -> tuple[Path, Path]:
    return write_config(tmp_path, upstream.url)


@pytest.fixture
def source(config_files: tuple[Path, Path], upstream: FakeUpstream) -> StandaloneSource:
    resources, keys = config_files
    return StandaloneSource([resources], keys, {"local": [upstream.url]})


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def metrics_url(metrics_port: int) -> str:
    """Where the gateway fixtures serve /metrics: never on the API port."""
    return f"http://127.0.0.1:{metrics_port}"


@pytest.fixture
async def gateway_url(source: StandaloneSource, metrics_port: int) -> AsyncIterator[str]:
    """The gateway in this process, on a real port, in front of the fake upstream."""
    settings = GatewaySettings(max_body_bytes=64 * 1024, metrics_port=metrics_port)
    credentials = EnvCredentials({"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN})
    app = create_app(settings, ConfigStore(source.load()), credentials)
    async with serving(app) as url:
        yield url
