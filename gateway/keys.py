"""Typed keys of the objects an app and a request carry."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from llmrouter.gateway.admission import PlanMemo
from llmrouter.gateway.audit.writer import AuditWriter
from llmrouter.gateway.auth import Identity
from llmrouter.gateway.budget import BudgetMonitor
from llmrouter.gateway.cache import ResponseCache
from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.credentials import CredentialSource
from llmrouter.gateway.endpoint_table import EndpointTable
from llmrouter.gateway.load import Load
from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.oidc import JWKSCache
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.state import StateStore
from llmrouter.gateway.store import ConfigStore
from llmrouter.gateway.upstream import UpstreamClient

SETTINGS = web.AppKey("settings", GatewaySettings)
STORE = web.AppKey("store", ConfigStore)
METRICS = web.AppKey("metrics", GatewayMetrics)
CREDENTIALS = web.AppKey("credentials", CredentialSource)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", UpstreamClient)
STATE = web.AppKey("state", StateStore)
JWKS = web.AppKey("jwks", JWKSCache)
ENDPOINTS = web.AppKey("endpoints", EndpointTable)
CACHE = web.AppKey("cache", ResponseCache)
BUDGETS = web.AppKey("budgets", BudgetMonitor)
PLANS = web.AppKey("plans", PlanMemo)
LOAD = web.AppKey("load", Load)
AUDIT = web.AppKey("audit", AuditWriter)
"""Present only when the gateway keeps an audit log (``--audit-file``)."""

# Per request, set by the middlewares.
REQUEST_ID = web.RequestKey("request_id", str)
"""Made by the gateway for every request: the identity of its slots and reservations."""
CLIENT_REQUEST_ID = web.RequestKey("client_request_id", str)
"""The client's own x-request-id, when it sent a well-formed one: logged and echoed only."""
IDENTITY = web.RequestKey("identity", Identity)
CONFIG = web.RequestKey("config", GatewayConfig)
