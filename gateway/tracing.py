"""OpenTelemetry traces of model requests, named as the GenAI semantic conventions name them.

One SERVER span per model request (``chat <model>``: gen_ai.operation.name,
gen_ai.request.model, gen_ai.response.model, gen_ai.provider.name, gen_ai.usage.*,
error.type, and the tenant, route, attempts and cache outcome), the time to first token as
an event on it, and one CLIENT span per upstream attempt whose W3C ``traceparent`` goes to
the model server. A client's own ``traceparent`` makes the request span its child.
Prompts and answers are never put in spans.

On only when an OTLP endpoint is configured (``--otlp-endpoint``, or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); sampling follows
``--trace-sample-ratio`` or the standard ``OTEL_TRACES_SAMPLER``. Off, the middleware is not
installed and an upstream call pays one context variable read.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from llmrouter.gateway.errors import GatewayError

if TYPE_CHECKING:
    from llmrouter.gateway.accounting import Outcome
    from llmrouter.gateway.config import ModelRoute, Upstream
    from llmrouter.gateway.openai_request import ModelRequest
    from llmrouter.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar(
    "llmrouter_tracer", default=None
)
SPAN = web.RequestKey("trace_span", trace.Span)
_NOTED: web.RequestKey[tuple[Any, Any]] = web.RequestKey("trace_noted", tuple)

_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
}
_PROVIDERS = {"openai": "openai", "azure-openai": "azure.ai.openai", "anthropic": "anthropic"}


def endpoint(settings: GatewaySettings) -> str | None:
    """Where spans go; None: tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return None
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = os.environ.get(name)
        if value:
            return value if name.endswith("TRACES_ENDPOINT") else value.rstrip("/") + "/v1/traces"
    return None


TRACER = web.AppKey("tracer", Tracer)


def _never_sampled(settings: GatewaySettings) -> bool:
    """Sampling at 0 keeps no trace: nothing is installed, so it costs nothing either."""
    if settings.trace_sample_ratio is not None:
        return settings.trace_sample_ratio <= 0
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "").lower()
    if sampler == "always_off":
        return True
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        try:
            return float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1")) <= 0
        except ValueError:
            return False
    return False


def setup_tracing(app: web.Application, settings: GatewaySettings) -> None:
    """Install the tracing middleware and exporter when an endpoint is configured."""
    where = endpoint(settings)
    if where is None or _never_sampled(settings):
        return
    # Imported only when on: a gateway without tracing never loads the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "llmrouter-gateway")}
    )
    if settings.trace_sample_ratio is not None:
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
        )
    else:
        provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, if set
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=where)))
    app[TRACER] = provider.get_tracer("llmrouter.gateway")
    app.middlewares.append(traced)
    logger.info("tracing: spans go to %s", where)

    async def flush(app: web.Application) -> AsyncIterator[None]:
        yield
        provider.shutdown()

    app.cleanup_ctx.append(flush)


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    operation = _OPERATIONS.get(request.path) if request.method == "POST" else None
    if operation is None:
        return await handler(request)
    tracer = request.app[TRACER]
    parent = _PROPAGATOR.extract(request.headers, getter=DefaultGetter())
    token = _TRACER.set(tracer)
    started = time.perf_counter()
    with tracer.start_as_current_span(
        operation, context=parent, kind=SpanKind.SERVER, record_exception=False
    ) as span:
        if not span.is_recording():  # not sampled: nothing to describe
            try:
                return await handler(request)
            finally:
                _TRACER.reset(token)
        span.set_attribute("gen_ai.operation.name", operation)
        span.set_attribute("http.request.method", "POST")
        span.set_attribute("http.route", request.path)
        request[SPAN] = span
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except (web.HTTPException, GatewayError) as exc:
            status = exc.status
            raise
        finally:
            _TRACER.reset(token)
            _finish(span, request, status, started)


def note(request: web.Request, req: ModelRequest, outcome: Outcome) -> None:
    """Called by the pipeline once the request is parsed: what the span describes."""
    span = request.get(SPAN)
    if span is not None:
        request[_NOTED] = (req, outcome)
        span.set_attribute("gen_ai.request.model", req.model)
        span.update_name(f"{_OPERATIONS.get(request.path, 'chat')} {req.model}")
        if req.max_output is not None:
            span.set_attribute("gen_ai.request.max_tokens", req.max_output)
        span.set_attribute("llmrouter.stream", req.stream)


def _finish(span: trace.Span, request: web.Request, status: int, started: float) -> None:
    from llmrouter.gateway.keys import IDENTITY

    noted = request.get(_NOTED)
    identity = request.get(IDENTITY)
    if identity is not None:
        span.set_attribute("llmrouter.tenant", identity.tenant.id)
    if noted is not None:
        _, outcome = noted
        status = outcome.status if outcome.status != 200 else status
        span.set_attribute("gen_ai.response.model", outcome.route.name)
        span.set_attribute("llmrouter.route", "; ".join(outcome.steps) or "direct")
        span.set_attribute("llmrouter.attempts", outcome.attempts)
        if outcome.cache is not None:
            span.set_attribute("llmrouter.cache", outcome.cache)
        if outcome.trial is not None:
            span.set_attribute("llmrouter.experiment", outcome.trial.label)
        if outcome.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", outcome.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", outcome.usage.output_tokens)
        if outcome.ttft_s is not None:
            at = time.time_ns() - int((time.perf_counter() - started - outcome.ttft_s) * 1e9)
            span.add_event("gen_ai.first_token", {"llmrouter.ttft_s": outcome.ttft_s}, at)
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))


@contextmanager
def upstream_attempt(
    route: ModelRoute, upstream: Upstream, req: ModelRequest, headers: dict[str, str]
) -> Iterator[trace.Span | None]:
    """A CLIENT span around one upstream call, its traceparent put in ``headers``."""
    tracer = _TRACER.get()
    if tracer is None or not trace.get_current_span().is_recording():
        yield None
        return
    operation = "embeddings" if req.operation.label == "embeddings" else "chat"
    if req.operation.label == "completions":
        operation = "text_completion"
    model = upstream.model or route.name
    with tracer.start_as_current_span(
        f"{operation} {model}", kind=SpanKind.CLIENT, record_exception=False
    ) as span:
        host, port = _address(upstream.base_url)
        span.set_attributes(
            {
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "gen_ai.provider.name": _PROVIDERS.get(upstream.protocol, "openai"),
                "server.address": host,
                "server.port": port,
                "llmrouter.model": route.name,
            }
        )
        _PROPAGATOR.inject(headers)
        yield span


@functools.lru_cache(maxsize=1024)
def _address(base_url: str) -> tuple[str, int]:
    parsed = URL(base_url)
    return parsed.host or "", parsed.port or 0


def attempt_failed(span: trace.Span | None, error_type: str) -> None:
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))
