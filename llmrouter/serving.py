"""One gateway process: serve until SIGTERM or SIGINT, then drain and return.

Draining, in order: readiness turns false (/readyz 503), the listening socket closes (new
connections go to other workers or replicas, or are refused), requests and streams in
flight finish, and each answer given meanwhile closes its connection. Whatever is still
running when the drain timeout ends, or at a second signal, is cut, and said so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from llmrouter.gateway.http_edge import GatewayRunner
from llmrouter.gateway.keys import LOAD
from llmrouter.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

IDLE_CONNECTIONS_S = 1.0
"""How long, once nothing is in flight, idle kept-alive connections may still bring one
more request (answered with ``Connection: close``) before they are closed."""

LISTEN_BACKLOG = 4096
"""Connections the kernel holds until they are accepted (capped by net.core.somaxconn).
With aiohttp's 128, a burst overflowed it: the kernel dropped connection attempts, which
clients retried 1, 3, 7… s later, instead of reaching the gateway and its quick 503."""

_POLL_S = 0.05


async def serve(
    app: web.Application,
    settings: GatewaySettings,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then drain it."""
    runner = GatewayRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=0.5,
        keepalive_timeout=settings.header_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, reuse_port=reuse_port, backlog=LISTEN_BACKLOG
        )
        await site.start()
        stop, hurry = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            # A second one (Ctrl-C twice) ends the drain at once.
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        if on_listening is not None:
            on_listening()
        await stop.wait()
        await drain(app, runner, site, settings.drain_timeout_s, hurry)
    finally:
        await runner.cleanup()


async def drain(
    app: web.Application,
    runner: web.AppRunner,
    site: web.TCPSite,
    timeout_s: float,
    hurry: asyncio.Event,
) -> None:
    load = app[LOAD]
    load.draining = True
    await site.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    logger.info("draining: %d requests in flight, up to %.1fs to finish", load.in_flight, timeout_s)
    server = runner.server
    while (elapsed := loop.time() - started) < timeout_s and not hurry.is_set():
        if load.in_flight == 0 and (
            elapsed >= IDLE_CONNECTIONS_S or server is None or not server.connections
        ):
            logger.info("drained in %.2fs", elapsed)
            return
        await asyncio.sleep(_POLL_S)
    logger.warning(
        "%s: cutting %d requests still in flight",
        "second signal" if hurry.is_set() else f"drain timeout ({timeout_s:.1f}s)",
        load.in_flight,
    )
