"""`llmrouter serve` as a subprocess, the way a user runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.processes import http_ok, stop, tail, wait_until


def llmrouter(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmrouter", *args]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # Two free_port calls can give the same port back: the first was let go at once.
        while self.metrics_port == self.port:
            self.metrics_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def start(self) -> ServeProcess:
        ports = ["--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        cmd = llmrouter("serve", *self.args, *ports)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc = self.proc
        wait_until(
            lambda: http_ok(f"{self.url}/readyz") or proc.poll() is not None,
            30,
            "llmrouter serve to be ready",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"llmrouter serve exited:\n{tail(self.log)}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app served on a free loopback port, in this event loop; yields its URL."""
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
