"""/metrics on a listener of its own.

The exposition names every tenant with its spend, budget and tokens, and every upstream:
nothing a tenant may read. Served apart from the API, it can be left to the scraper alone
(a port no Service or NetworkPolicy exposes to clients) while the API port answers
/metrics with 404 like any unknown path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from llmrouter.gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


def metrics_app(metrics: GatewayMetrics) -> web.Application:
    async def exposition(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def slo_counts(_: web.Request) -> web.Response:
        # This process's raw SLAPolicy counts, which the operator sums across gateway pods.
        return web.json_response(metrics.slo.snapshot())

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/slo-counts", slo_counts)
    return app


def metrics_listener(
    metrics: GatewayMetrics, host: str, port: int
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A cleanup_ctx serving /metrics on ``host:port`` while the gateway app runs."""

    @contextlib.asynccontextmanager
    async def ctx(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(metrics_app(metrics), access_log=None)
        await runner.setup()
        # Worker processes (which share counters through the multiprocess folder) share
        # this port as they share the API's.
        shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        site = web.TCPSite(runner, host, port, reuse_port=shared or None)
        try:
            await site.start()
            logger.info("metrics on http://%s:%d/metrics", host, port)
            yield
        finally:
            await runner.cleanup()

    return ctx
