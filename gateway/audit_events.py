"""The gateway's audit events, written through llmrouter.gateway.audit.

What is recorded: one record per model request (queued: the request path never waits for
the disk), authentication failures and permission denials (queued), every admin API call
(written before its answer is sent: an admin call the log cannot record fails with 503),
and each configuration put in force (its fingerprint). Never an API key, a token or an
answer, and no prompt unless its Tenant asks (spec.audit.prompts: Hash or Redacted); key
names, OIDC subjects and client addresses only as keyed HMACs.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from llmrouter.gateway.audit.chain import Signer
from llmrouter.gateway.audit.checkpoints import CheckpointFile, CheckpointStore, RedisCheckpoints
from llmrouter.gateway.audit.jcs import canonical
from llmrouter.gateway.audit.pseudonym import Pseudonyms, read_key
from llmrouter.gateway.audit.sinks import Copy, RotatingFile, Sink
from llmrouter.gateway.audit.writer import AuditUnavailable, AuditWriter
from llmrouter.gateway.auth import Identity
from llmrouter.gateway.config import GatewayConfig, TenantPolicy
from llmrouter.gateway.errors import GatewayError
from llmrouter.gateway.guardrails.content import request_body
from llmrouter.gateway.guardrails.detectors import BUILTIN
from llmrouter.gateway.guardrails.engine import Rule, Scanner
from llmrouter.gateway.keys import (
    AUDIT,
    BUDGETS,
    IDENTITY,
    METRICS,
    REQUEST_ID,
    SETTINGS,
    STORE,
)
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.usage import RequestRecord

logger = logging.getLogger(__name__)

HMAC_KEY_ENV = "LLMROUTER_AUDIT_HMAC_KEY"


class AuditFailed(GatewayError):
    status = 503
    type = "server_error"
    code = "audit_unavailable"


def checkpoint_path(audit_file: str) -> Path:
    """Where checkpoints go unless told: beside the log, outside its rotation's names."""
    path = Path(audit_file)
    return path.with_name(f"{path.stem}-checkpoints{path.suffix or '.jsonl'}")


def hmac_key(settings: GatewaySettings) -> Pseudonyms:
    if settings.audit_hmac_key_file:
        return Pseudonyms(read_key(Path(settings.audit_hmac_key_file).read_bytes()))
    if os.environ.get(HMAC_KEY_ENV):
        return Pseudonyms(os.environ[HMAC_KEY_ENV].encode())
    logger.warning(
        "no audit HMAC key (--audit-hmac-key-file or $%s): a random one is used, so the "
        "HMACs of this process match no other process's",
        HMAC_KEY_ENV,
    )
    return Pseudonyms.random()


def open_writer(settings: GatewaySettings) -> AuditWriter:
    """The audit writer ``settings`` describe; raises OSError or ValueError on bad files."""
    assert settings.audit_file and settings.audit_signing_key_file
    signer = Signer.from_pem(Path(settings.audit_signing_key_file).read_bytes())
    stores: list[CheckpointStore] = [
        CheckpointFile(
            Path(settings.audit_checkpoint_file)
            if settings.audit_checkpoint_file
            else checkpoint_path(settings.audit_file)
        )
    ]
    if settings.state_url:
        stores.append(RedisCheckpoints(settings.state_url))
    copies: list[Sink] = [Copy()] if settings.audit_stdout else []
    file = RotatingFile(
        Path(settings.audit_file),
        max_bytes=settings.audit_rotate_bytes,
        max_age_s=settings.audit_rotate_age_s,
        retention_s=settings.audit_retention_days * 86400.0
        if settings.audit_retention_days
        else None,
        clock=settings.clock,
    )
    return AuditWriter(
        file,
        signer,
        hmac_key(settings),
        copies=copies,
        checkpoint_stores=stores,
        checkpoint_every=settings.audit_checkpoint_every,
        checkpoint_interval_s=settings.audit_checkpoint_interval_s,
        clock=settings.clock,
    )


def setup_audit(app: web.Application) -> None:
    """Audit the app when its settings name an audit file."""
    settings = app[SETTINGS]
    if not settings.audit_file:
        return
    app[AUDIT] = writer = open_writer(settings)
    app.middlewares.append(admin_calls)
    app[BUDGETS].on_event = functools.partial(_budget_event, writer)
    app.cleanup_ctx.append(_run_writer)
    metrics = app[METRICS]
    metrics.live_gauge(
        "llmrouter_audit_records_dropped",
        "Request records this process dropped since it started (audit queue full, or the "
        "log not writable); each checkpoint says how many.",
        lambda: float(writer.dropped),
    )
    metrics.live_gauge(
        "llmrouter_audit_queue_depth",
        "Audit records waiting to be written.",
        lambda: float(writer.queued),
    )
    metrics.live_gauge(
        "llmrouter_audit_checkpoint_failures",
        "Checkpoints this process could not store (file or Redis).",
        lambda: float(writer.checkpoint_failures),
    )


async def _run_writer(app: web.Application) -> AsyncIterator[None]:
    writer = app[AUDIT]
    await writer.start()
    logger.info("audit log %s, chain %s", getattr(writer.file, "path", "?"), writer.chain.id)
    store = app[STORE]
    if store.ready:
        config_applied(app, store.current)
    yield
    await writer.close()


def _who(writer: AuditWriter, identity: Identity) -> dict[str, Any]:
    return {
        "tenant": identity.tenant.id,
        "user": writer.pseudonyms.of(identity.user),
        "role": identity.role,
    }


def request_done(
    app: web.Application,
    identity: Identity,
    record: RequestRecord,
    route: list[str],
    body: dict[str, Any] | None = None,
) -> None:
    """Queue the record of a finished model request (llmrouter.gateway.accounting)."""
    writer = app.get(AUDIT)
    if writer is None:
        return
    prompts = identity.tenant.audit_prompts
    extra = _prompt(writer, prompts, body) if prompts != "off" and body is not None else {}
    writer.submit(
        {
            **extra,
            "type": "request",
            "request_id": record.request_id,
            **_who(writer, identity),
            "model": record.model,
            "endpoint": record.endpoint,
            "route": route,
            "status": record.status,
            "input_tokens": record.usage.input_tokens,
            "output_tokens": record.usage.output_tokens,
            "cost_usd": str(record.cost_usd),
            "latency_ms": round(record.duration_s * 1000),
            "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000),
            "stream": record.stream,
        }
    )


_PROMPT_FIELDS = ("messages", "prompt", "input")


def _prompt(writer: AuditWriter, mode: str, body: dict[str, Any]) -> dict[str, Any]:
    """A tenant's opt-in (Tenant spec.audit.prompts): the prompt as a keyed HMAC, or with
    what the built-in detectors find replaced. Computed here, on the request path, as the
    body is at hand; only tenants that asked for it pay for it."""
    prompt = {name: body[name] for name in _PROMPT_FIELDS if name in body}
    if mode == "hash":
        try:
            data = canonical(prompt)
        except ValueError:
            data = orjson.dumps(prompt)
        return {"prompt_hmac": writer.pseudonyms.digest(data)}
    try:
        redacted = request_body(prompt, _redactor(), Counter())
    except Exception:
        # A detector that fails must not let the prompt through unredacted.
        logger.warning("audit: the prompt could not be redacted; left out", exc_info=True)
        return {"prompt_redacted": None}
    return {"prompt_redacted": {n: redacted[n] for n in _PROMPT_FIELDS if n in redacted}}


@functools.cache
def _redactor() -> Scanner:
    rules = [Rule(d, "redact", i) for i, d in enumerate(BUILTIN.values())]
    return Scanner(tuple(rules))


def _budget_event(
    writer: AuditWriter, tenant: TenantPolicy, month: str, level: str, spent: Decimal
) -> None:
    """A tenant's spend crossed its warning level or its budget (once per month and level,
    across replicas): a budget decision, never dropped."""
    budget = tenant.budget
    writer.submit_reliable(
        {
            "type": f"budget.{level}",
            "tenant": tenant.id,
            "month": month,
            "spent_usd": str(spent),
            "budget_usd": str(budget.monthly_usd) if budget else None,
            "blocking": bool(budget and budget.block),
        }
    )


def refused(request: web.Request, exc: GatewayError) -> None:
    """Queue the record of an authentication failure, a permission denial or a request
    refused for its tenant's budget (llmrouter.gateway.middleware.errors)."""
    writer = request.app.get(AUDIT)
    if writer is None:
        return
    if exc.code == "budget_exceeded":
        identity = request.get(IDENTITY)
        if identity is not None:
            writer.submit(
                {
                    "type": "budget.refused",
                    "request_id": request[REQUEST_ID],
                    **_who(writer, identity),
                    "path": _route(request),
                }
            )
        return
    if exc.status not in (401, 403):
        return
    event: dict[str, Any] = {
        "request_id": request[REQUEST_ID],
        "method": request.method,
        "path": _route(request),
        "code": exc.code,
    }
    identity = request.get(IDENTITY)
    if exc.status == 401:
        # The message says why (expired, wrong audience…) and never repeats the credential.
        event |= {"type": "auth.failure", "reason": exc.message}
        event["client"] = writer.pseudonyms.of(f"ip:{request.remote or ''}")
    else:
        # A denial's message names the key: left out, the HMAC stands for it.
        event["type"] = "permission.denied"
        if identity is not None:
            event |= _who(writer, identity)
    writer.submit(event)


_ADMIN_PARAMETERS = frozenset(
    {"from", "to", "groupBy", "tenant", "type", "user", "model", "request_id", "limit", "after"}
)


def _route(request: web.Request) -> str:
    """The route's pattern (``/v1/models/{model}``), never the client's own path: a key
    pasted into a URL must not reach the log."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


@web.middleware
async def admin_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin API call is on disk before its answer is sent, or it fails."""
    response = await handler(request)
    if not request.path.startswith("/admin/"):
        return response
    writer = request.app[AUDIT]
    identity = request[IDENTITY]
    try:
        await writer.write(
            {
                "type": "admin.call",
                "request_id": request[REQUEST_ID],
                **_who(writer, identity),
                "method": request.method,
                "path": _route(request),
                # Names only (a value may name a person: the audit API's user filter), and
                # only those the admin API knows: a client can put anything in a name.
                "query": sorted({n if n in _ADMIN_PARAMETERS else "other" for n in request.query}),
                "status": response.status,
            }
        )
    except AuditUnavailable as exc:
        logger.error("admin call %s %s refused: %s", request.method, request.path, exc)
        raise AuditFailed("the audit log cannot be written; admin calls are refused") from None
    return response


def config_applied(app: web.Application, config: GatewayConfig) -> None:
    """Record a configuration put in force (llmrouter.gateway.app.offer_config)."""
    writer = app.get(AUDIT)
    if writer is None:
        return
    _keep_for(writer, app[SETTINGS], config)
    writer.submit_reliable(
        {
            "type": "config.applied",
            "fingerprint": config.fingerprint(),
            "tenants": len(config.tenants),
            "models": len(config.models),
        }
    )


def _keep_for(writer: AuditWriter, settings: GatewaySettings, config: GatewayConfig) -> None:
    """Rotated files are removed after the longest retention anyone asked for: the
    gateway's flag or a Tenant's spec.audit.retentionDays. One file holds every tenant's
    records, chained: a record cannot leave before the others of its file."""
    days = [t.audit_retention_days for t in config.tenants.values() if t.audit_retention_days]
    if settings.audit_retention_days:
        days.append(settings.audit_retention_days)
    if isinstance(writer.file, RotatingFile):
        writer.file.retention_s = max(days) * 86400.0 if days else None
