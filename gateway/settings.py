"""Settings of one gateway process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 in a container."""

    port: int = 8000
    """TCP port to listen on."""

    metrics_port: int | None = None
    """Port of the /metrics listener (on ``host``); None serves no metrics. The API port
    never answers /metrics: the exposition names every tenant and upstream."""

    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted; a larger one gets 413 before it is read whole."""

    access_log: bool = False
    """Log one line per request (off by default: it costs time on every request)."""

    state_url: str | None = None
    """``redis://host:port/db`` to share limits, usage and spend between replicas and
    keep them across restarts; None keeps them in this process's memory."""

    redis_failure_policy: Literal["fail-open", "fail-closed"] = "fail-open"
    """What happens while Redis is unreachable (see llmrouter.gateway.state.resilient)."""

    usage_journal: str | None = None
    """A folder where each process keeps the usage of requests finished while Redis was
    unreachable until Redis takes it, across crashes and restarts; None: memory only."""

    max_in_flight: int = 1000
    """Requests this process serves at once; past it, 503 ``overloaded`` with Retry-After at
    once, rather than a queue that grows until clients time out."""

    drain_timeout_s: float = 30.0
    """After SIGTERM, how long requests and streams in flight may take to finish."""

    balancer: Literal["least-loaded", "round-robin"] = "least-loaded"
    """How an endpoint is chosen among a model's healthy ones."""

    max_attempts: int = 3
    """Endpoints and fallback models one request may try before it fails."""

    breaker_failures: int = 5
    """Consecutive failures of an endpoint that open its circuit breaker."""

    breaker_cooldown_s: float = 10.0
    """How long an open breaker keeps requests away before one probe may try."""

    poll_interval_s: float = 1.0
    """How often llama-servers are asked for their load (/metrics) and health."""

    cache_ttl_s: float = 300.0
    """How long a cached response is served; 0 turns the response cache off."""

    cache_memory_bytes: int = 64 * 1024 * 1024
    """Bytes of responses (and their keys) the in-memory cache keeps, least recently used
    out first; with Redis state the cache is in Redis, bounded by Redis's maxmemory."""

    cache_max_bytes: int = 1024 * 1024
    """Larger responses are not cached."""

    header_timeout_s: float = 30.0
    """A connection that has not sent a whole request head within this many seconds of
    opening, or of its previous answer, is closed: idle kept-alive connections and clients
    sending their headers slowly alike (llmrouter.gateway.http_edge)."""

    body_timeout_s: float = 60.0
    """A request body must arrive within this many seconds of the gateway asking for it;
    else 408 ``request_timeout`` and the connection is closed."""

    audit_file: str | None = None
    """The audit log (JSON lines, hash-chained, rotated); None keeps no audit log. A second
    process given the same path writes PATH.1, PATH.2…"""

    audit_signing_key_file: str | None = None
    """PEM Ed25519 private key that signs the checkpoints (``llmrouter audit keygen``)."""

    audit_checkpoint_file: str | None = None
    """Where signed checkpoints are appended; None: ``<stem>-checkpoints<suffix>`` beside the
    log. With ``state_url`` they also go to a Redis list."""

    audit_hmac_key_file: str | None = None
    """Key of the HMACs that stand for key names, OIDC subjects and addresses; None: the
    environment's LLMROUTER_AUDIT_HMAC_KEY, else a random key per process."""

    audit_checkpoint_every: int = 1000
    """Records between two checkpoints, at most."""

    audit_checkpoint_interval_s: float = 10.0
    """Seconds between two checkpoints, at most, while records come."""

    audit_stdout: bool = False
    """Copy every audit line to stdout, for a log collector feeding a SIEM."""

    audit_rotate_bytes: int = 100 * 1024 * 1024
    """The audit file is rotated once this large."""

    audit_rotate_age_s: float = 24 * 3600.0
    """The audit file is rotated once this old."""

    audit_retention_days: int | None = None
    """Rotated audit files older than this are removed; None keeps them."""

    otlp_endpoint: str | None = None
    """OTLP/HTTP base URL (``http://collector:4318``) to send traces to; None: the standard
    ``OTEL_EXPORTER_OTLP_*`` variables, and without them no tracing at all."""

    trace_sample_ratio: float | None = None
    """Share of traces kept (parent-based); None: ``OTEL_TRACES_SAMPLER``, else all."""

    jwks_min_refresh_s: float = 10.0
    """An OIDC token with an unknown key id refetches the issuer's keys at most this often."""

    clock: Callable[[], float] = time.time
    """Wall-clock seconds; tests replace it to cross minutes, days and months."""
