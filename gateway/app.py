"""create_app(settings, store) -> web.Application: the gateway, ready to run or test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from llmrouter.gateway import middleware
from llmrouter.gateway.credentials import CredentialSource, EnvCredentials
from llmrouter.gateway.handlers import routes
from llmrouter.gateway.keys import (
    CREDENTIALS,
    HTTP_SESSION,
    LEDGER,
    METRICS,
    SETTINGS,
    STORE,
    UPSTREAM,
)
from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.upstream import UpstreamClient
from llmrouter.gateway.usage import UsageLedger


def create_app(
    settings: GatewaySettings,
    store: ConfigStore,
    credentials: CredentialSource | None = None,
) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.errors, middleware.authentication],
    )
    app[SETTINGS] = settings
    app[STORE] = store
    app[METRICS] = GatewayMetrics()
    app[LEDGER] = UsageLedger()
    app[CREDENTIALS] = credentials or EnvCredentials()
    app.add_routes(routes)
    app.cleanup_ctx.append(_upstream_session)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    # One pooled session for every upstream; per-request timeouts come from the model.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=30)
    session = aiohttp.ClientSession(connector=connector)
    app[HTTP_SESSION] = session
    app[UPSTREAM] = UpstreamClient(session, app[CREDENTIALS])
    yield
    await session.close()
