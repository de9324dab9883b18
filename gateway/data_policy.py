"""A tenant's data policy on the request path (the policy itself is gateway/guardrails).

A tenant without one costs an attribute test per request. Findings are counted per tenant,
detector, direction and action (never the values) and kept on the request for its audit
record. A detector that fails makes the request fail (closed), never pass unchecked.
"""

from __future__ import annotations

import logging
from collections import Counter

import orjson
from aiohttp import web

from llmrouter.gateway.errors import GatewayError, InvalidRequest
from llmrouter.gateway.guardrails.content import INVISIBLE, invisible_count, request_body
from llmrouter.gateway.guardrails.content import response_doc as _response_doc
from llmrouter.gateway.guardrails.engine import Action, Blocked, DetectorFailed
from llmrouter.gateway.guardrails.policy import Direction, Guard, guard_for
from llmrouter.gateway.guardrails.sse import StreamGuard
from llmrouter.gateway.keys import CONFIG, IDENTITY, METRICS, REQUEST_ID
from llmrouter.gateway.openai_request import ModelRequest

logger = logging.getLogger(__name__)

Findings = Counter[tuple[str, Action]]

FINDINGS = web.RequestKey("guardrail_findings", dict)
"""``direction/detector/action`` -> count, for the request's audit record."""


class ContentBlocked(InvalidRequest):
    code = "content_filter"


class DataPolicyFailed(GatewayError):
    """The policy could not be applied: the request does not go ahead unchecked."""

    code = "data_policy_failed"


def _guard(request: web.Request) -> Guard | None:
    tenant = request[IDENTITY].tenant
    if tenant.data_policy is None:
        return None
    try:
        return guard_for(request[CONFIG], tenant)
    except Exception as exc:
        logger.exception("tenant %s: data policy cannot be built", tenant.id)
        raise DataPolicyFailed("the tenant's data policy could not be applied") from exc


def record(request: web.Request, findings: Findings, direction: Direction) -> None:
    if not findings:
        return
    tenant = request[IDENTITY].tenant.id
    metric = request.app[METRICS].guardrail_findings
    kept = request.get(FINDINGS)
    if kept is None:
        kept = request[FINDINGS] = {}
    for (detector, action), n in findings.items():
        metric.labels(tenant, detector, direction, action).inc(n)
        key = f"{direction}/{detector}/{action}"
        kept[key] = kept.get(key, 0) + n


def check_request(request: web.Request, req: ModelRequest) -> ModelRequest:
    """The request as it may go upstream: redacted where the policy says so. Raises
    ContentBlocked (400) for a ``block`` finding."""
    guard = _guard(request)
    if guard is None:
        return req
    findings: Findings = Counter()
    try:
        body = req.body
        if guard.input is not None:
            body = request_body(req.body, guard.input, findings)
        if guard.invisible is not None and invisible_count(req.body):
            findings[(INVISIBLE, guard.invisible)] += 1
            if guard.invisible == "block":
                raise Blocked(INVISIBLE, "the request's text")
    except Blocked as exc:
        logger.info(
            "request %s: refused by data policy (%s in %s)",
            request[REQUEST_ID],
            exc.detector,
            exc.where,
        )
        raise ContentBlocked(
            f"the request was refused by the tenant's data policy: {exc.detector} found in "
            f"{exc.where}",
            param=exc.where or None,
        ) from exc
    except DetectorFailed as exc:
        logger.error("request %s: data policy failed on input: %s", request[REQUEST_ID], exc)
        raise DataPolicyFailed("the tenant's data policy could not be applied") from exc
    finally:
        record(request, findings, "input")
    if not any(action == "redact" for _, action in findings):
        return req
    return req.with_body(body)


def check_answer(request: web.Request, raw: bytes, doc: object) -> bytes:
    """A whole answer as the client may see it: redacted, and a blocked choice emptied
    with ``finish_reason: content_filter``."""
    guard = _guard(request)
    if guard is None or guard.output is None or not isinstance(doc, dict):
        return raw
    findings: Findings = Counter()
    try:
        checked = _response_doc(doc, guard.output, findings)
    except DetectorFailed as exc:
        logger.error("request %s: data policy failed on output: %s", request[REQUEST_ID], exc)
        raise DataPolicyFailed("the tenant's data policy could not be applied") from exc
    finally:
        record(request, findings, "output")
    if not any(action in ("redact", "block") for _, action in findings):
        return raw
    return orjson.dumps(checked)


def stream_guard(request: web.Request) -> StreamGuard | None:
    guard = _guard(request)
    if guard is None or guard.output is None:
        return None
    stream = StreamGuard(guard.output)
    stream.report = lambda findings: record(request, findings, "output")
    return stream
