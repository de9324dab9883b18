"""Prometheus metrics of one gateway app, in a registry of its own.

Labels are bounded: tenant and model names come from configuration, never from users,
and request ids or key secrets never become labels.

With several worker processes (``llmrouter serve --workers N``), counters, histograms and
budget gauges are summed across workers through prometheus_client's multiprocess files;
live gauges (state, configuration, endpoints) describe the worker that answers the scrape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from llmrouter.gateway.endpoint_table import EndpointTable
from llmrouter.gateway.endpoints import BreakerState
from llmrouter.gateway.sli import LATENCY_BUCKETS, counts_for_sli
from llmrouter.gateway.slo_window import SLOCounts
from llmrouter.gateway.usage import RequestRecord


class GatewayMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmrouter_requests",
            "Model requests answered, by outcome.",
            ["tenant", "model", "endpoint", "code"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmrouter_tokens",
            "Tokens accounted, by direction (input, output).",
            ["tenant", "model", "direction"],
            registry=self.registry,
        )
        self.cost = Counter(
            "llmrouter_cost_usd",
            "Cost of answered requests in US dollars.",
            ["tenant", "model"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llmrouter_request_duration_seconds",
            "Time from request received to last byte sent, of requests that were not "
            "refused or abandoned by the client (no 4xx).",
            ["tenant", "model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "llmrouter_time_to_first_token_seconds",
            "Time from request received to the first streamed content sent, of requests "
            "that were not refused or abandoned by the client (no 4xx).",
            ["tenant", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "llmrouter_config_reloads",
            "Configuration loads, by result (ok, error).",
            ["result"],
            registry=self.registry,
        )
        self.budget_spend = Gauge(
            "llmrouter_budget_spend_usd",
            "Spend this month as last seen by this replica, for tenants with a budget.",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.budget_limit = Gauge(
            "llmrouter_budget_limit_usd",
            "Monthly budget, for tenants with a budget.",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.budget_events = Counter(
            "llmrouter_budget_events",
            "Budget thresholds crossed (warning, exceeded).",
            ["tenant", "level"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "llmrouter_admission_refusals",
            "Requests refused by a limit or the budget.",
            ["tenant", "limit"],
            registry=self.registry,
        )
        self.guardrail_findings = Counter(
            "llmrouter_guardrail_findings",
            "Data-policy findings, by detector, direction (input, output) and action "
            "(redact, block, flag); never the values.",
            ["tenant", "detector", "direction", "action"],
            registry=self.registry,
        )
        self.counted_usage = Counter(
            "llmrouter_usage_counted_by_gateway",
            "Requests charged what the gateway counted because the model server reported no "
            "usage (client disconnect, broken stream, a server that sends none).",
            ["tenant", "model"],
            registry=self.registry,
        )
        self.overshoot = Counter(
            "llmrouter_budget_overshoot_usd",
            "Cost of requests beyond what admission reserved for them (a model server "
            "reporting more input than estimated).",
            ["tenant"],
            registry=self.registry,
        )
        self.upstream_failures = Counter(
            "llmrouter_upstream_failures",
            "Attempts that failed and went to another endpoint or model, by reason.",
            ["model", "code"],
            registry=self.registry,
        )
        self.overloaded = Counter(
            "llmrouter_overloaded",
            "Requests refused because this process had its maximum in flight.",
            registry=self.registry,
        )
        self.slo = SLOCounts()
        """This process's own counts for the configuration's SLAPolicies (/admin/slo)."""
        self._live = _LiveCollector()
        self.registry.register(self._live)
        self._process_collectors: list[Collector] = [self._live]

    def live_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read from this process when /metrics is scraped."""
        self._live.gauges.append((name, documentation, read))

    def exposition(self) -> bytes:
        """The text /metrics answers: with worker processes, their counters summed."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        for collector in self._process_collectors:
            registry.register(collector)
        return generate_latest(registry)

    def watch_endpoints(self, table: EndpointTable) -> None:
        """Breaker state and load of every endpoint, read when /metrics is scraped."""
        collector = _EndpointCollector(table)
        self.registry.register(collector)
        self._process_collectors.append(collector)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set: the lookup costs more
        than the increment on every request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe(self, rec: RequestRecord) -> None:
        child = self.child
        child(self.requests, rec.tenant, rec.model, rec.endpoint, str(rec.status)).inc()
        if rec.usage.input_tokens:
            child(self.tokens, rec.tenant, rec.model, "input").inc(rec.usage.input_tokens)
        if rec.usage.output_tokens:
            child(self.tokens, rec.tenant, rec.model, "output").inc(rec.usage.output_tokens)
        if rec.cost_usd:
            child(self.cost, rec.tenant, rec.model).inc(float(rec.cost_usd))
        if not counts_for_sli(rec.status):
            # A client's own 4xx (or its going away) says nothing of the platform's speed.
            return
        child(self.duration, rec.tenant, rec.model, rec.endpoint).observe(rec.duration_s)
        if rec.ttft_s is not None:
            child(self.ttft, rec.tenant, rec.model).observe(rec.ttft_s)


class _LiveCollector(Collector):
    def __init__(self) -> None:
        self.gauges: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, read in self.gauges:
            yield GaugeMetricFamily(name, documentation, value=read())


class _EndpointCollector(Collector):
    def __init__(self, table: EndpointTable) -> None:
        self._table = table

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "llmrouter_endpoint_breaker_state",
            "1 for the breaker state an endpoint is in (closed, open, half_open).",
            labels=["model", "endpoint", "state"],
        )
        in_flight = GaugeMetricFamily(
            "llmrouter_endpoint_in_flight",
            "Requests this gateway has in flight at an endpoint.",
            labels=["model", "endpoint"],
        )
        usable = GaugeMetricFamily(
            "llmrouter_endpoint_usable",
            "1 when the endpoint may take a request now.",
            labels=["model", "endpoint"],
        )
        now = time.monotonic()
        for e in self._table.all():
            for s in BreakerState:
                state.add_metric([e.model, e.url, s.value], float(e.state is s))
            in_flight.add_metric([e.model, e.url], e.in_flight)
            usable.add_metric([e.model, e.url], float(e.usable(now)))
        yield state
        yield in_flight
        yield usable
