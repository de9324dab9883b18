"""create_app(settings, store) -> web.Application: the gateway, ready to run or test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from llmrouter.gateway import middleware
from llmrouter.gateway.admin import admin_routes
from llmrouter.gateway.admin_audit import audit_routes
from llmrouter.gateway.admin_experiments import experiment_routes
from llmrouter.gateway.admission import PlanMemo
from llmrouter.gateway.audit_events import config_applied, setup_audit
from llmrouter.gateway.budget import BudgetMonitor
from llmrouter.gateway.cache import MemoryCache, RedisCache
from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.credentials import CredentialSource, EnvCredentials
from llmrouter.gateway.endpoint_table import EndpointTable, poll_once
from llmrouter.gateway.endpoints import BreakerSettings
from llmrouter.gateway.feedback import feedback_routes
from llmrouter.gateway.handlers import routes
from llmrouter.gateway.http_edge import body_deadline
from llmrouter.gateway.keys import (
    BUDGETS,
    CACHE,
    CREDENTIALS,
    ENDPOINTS,
    HTTP_SESSION,
    JWKS,
    LOAD,
    METRICS,
    PLANS,
    SETTINGS,
    STATE,
    STORE,
    UPSTREAM,
)
from llmrouter.gateway.load import Load
from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.metrics_listener import metrics_listener
from llmrouter.gateway.oidc import JWKSCache
from llmrouter.gateway.openapi import openapi_routes
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.state import StateStore
from llmrouter.gateway.state.journal import Journal
from llmrouter.gateway.state.memory import MemoryStore
from llmrouter.gateway.state.redis import RedisStore
from llmrouter.gateway.state.resilient import ResilientStore
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.tracing import setup_tracing
from llmrouter.gateway.upstream import UpstreamClient

logger = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    store: ConfigStore,
    credentials: CredentialSource | None = None,
    state: StateStore | None = None,
) -> web.Application:
    """The gateway. ``state`` overrides the store ``settings.state_url`` would open."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            middleware.shedding,
            middleware.errors,
            middleware.authentication,
            body_deadline,
        ],
    )
    app[SETTINGS] = settings
    app[STORE] = store
    setup_tracing(app, settings)
    app[METRICS] = GatewayMetrics()
    app[CREDENTIALS] = credentials or EnvCredentials()
    app[STATE] = state or open_state(settings)
    app[BUDGETS] = BudgetMonitor(app[METRICS], app[STATE])
    app[PLANS] = PlanMemo()
    app[LOAD] = Load(settings.max_in_flight)
    app.on_response_prepare.append(middleware.close_when_draining)
    app[ENDPOINTS] = EndpointTable(
        BreakerSettings(settings.breaker_failures, settings.breaker_cooldown_s)
    )
    app[METRICS].watch_endpoints(app[ENDPOINTS])
    app[CACHE] = (
        RedisCache(settings.state_url)
        if settings.state_url
        else MemoryCache(settings.cache_memory_bytes)
    )
    _report_state(app)
    app[METRICS].live_gauge(
        "llmrouter_config_models",
        "Models in the configuration in force.",
        lambda: float(len(store.current.models)) if store.ready else 0.0,
    )
    app.add_routes(routes)
    app.add_routes(admin_routes)
    app.add_routes(feedback_routes)
    app.add_routes(experiment_routes)
    app.add_routes(audit_routes)
    app.add_routes(openapi_routes)
    setup_audit(app)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_poll_endpoints)
    if settings.metrics_port is not None:
        app.cleanup_ctx.append(metrics_listener(app[METRICS], settings.host, settings.metrics_port))
    app.on_startup.append(_start_state)
    app.on_cleanup.append(_close_state)
    return app


def open_state(settings: GatewaySettings) -> StateStore:
    if settings.state_url is None:
        return MemoryStore()
    journal = Journal(Path(settings.usage_journal) if settings.usage_journal else None)
    return ResilientStore(
        RedisStore(settings.state_url), settings.redis_failure_policy, journal=journal
    )


def _report_state(app: web.Application) -> None:
    state, metrics = app[STATE], app[METRICS]
    resilient = state if isinstance(state, ResilientStore) else None
    metrics.live_gauge(
        "llmrouter_state_available",
        "1 while the shared state (Redis) answers, 0 during an outage.",
        lambda: float(resilient.available) if resilient else 1.0,
    )
    metrics.live_gauge(
        "llmrouter_state_pending_settlements",
        "Finished requests whose usage waits for the shared state to come back.",
        lambda: float(resilient.pending) if resilient else 0.0,
    )


async def _poll_endpoints(app: web.Application) -> AsyncIterator[None]:
    """Asks every llama-server for its load and health, so choices follow the servers."""

    async def loop() -> None:
        while True:
            if app[STORE].ready:
                app[ENDPOINTS].sync(app[STORE].current)
            pollable = [e for e in app[ENDPOINTS].all() if e.pollable]
            table, credentials = app[ENDPOINTS], app[CREDENTIALS]
            await asyncio.gather(
                *(poll_once(app[HTTP_SESSION], e, table.secret(e, credentials)) for e in pollable)
            )
            await asyncio.sleep(app[SETTINGS].poll_interval_s)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _start_state(app: web.Application) -> None:
    state = app[STATE]
    if isinstance(state, ResilientStore):
        await state.start()


async def _close_state(app: web.Application) -> None:
    await app[STATE].close()
    await app[CACHE].close()


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    # One pooled session for every upstream; per-request timeouts come from the model.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=30)
    session = aiohttp.ClientSession(connector=connector)
    app[HTTP_SESSION] = session
    app[UPSTREAM] = UpstreamClient(session, app[CREDENTIALS])
    app[JWKS] = JWKSCache(session, min_refresh_s=app[SETTINGS].jwks_min_refresh_s)
    yield
    await session.close()


def offer_config(app: web.Application, config: GatewayConfig | None, error: str = "") -> None:
    """Put a newly compiled configuration in force, or log why there is none and keep the
    last good one: the one way every configuration source updates a running gateway."""
    if config is None:
        app[METRICS].config_reloads.labels("error").inc()
        logger.error("configuration not loaded, keeping the last good one:\n%s", error)
        return
    app[METRICS].config_reloads.labels("ok").inc()
    app[STORE].replace(config)
    config_applied(app, config)
