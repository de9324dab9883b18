"""The gateway metrics SLO rules are written against: tenant labels, the fixed bucket set,
and which answers are SLI events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import generate_latest

from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.gateway.sli import LATENCY_BUCKETS, bucket_for, counts_for_sli, is_error, le_label
from llmrouter.gateway.usage import RequestRecord, Usage


def record(status: int, duration_s: float, ttft_s: float | None = None) -> RequestRecord:
    return RequestRecord(
        request_id="r",
        tenant="team/acme",
        key_name="k",
        model="llama",
        endpoint="chat",
        status=status,
        usage=Usage(3, 4),
        cost_usd=Decimal(0),
        duration_s=duration_s,
        ttft_s=ttft_s,
    )


def test_histograms_carry_the_tenant_and_leave_out_client_caused_answers() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record(200, 1.2, ttft_s=0.3))
    metrics.observe(record(504, 15.0))  # a timeout: the platform's, counted
    metrics.observe(record(502, 0.01))
    metrics.observe(record(400, 0.001))  # the client's own: not an event
    metrics.observe(record(499, 40.0))  # the client went away: not an event
    get = metrics.registry.get_sample_value
    labels = {"tenant": "team/acme", "model": "llama", "endpoint": "chat"}
    assert get("llmrouter_request_duration_seconds_count", labels) == 3
    assert get("llmrouter_request_duration_seconds_bucket", {**labels, "le": "2.0"}) == 2
    assert get("llmrouter_request_duration_seconds_bucket", {**labels, "le": "15.0"}) == 3
    ttft = {"tenant": "team/acme", "model": "llama"}
    assert get("llmrouter_time_to_first_token_seconds_count", ttft) == 1
    assert get("llmrouter_time_to_first_token_seconds_bucket", {**ttft, "le": "0.5"}) == 1
    # Every answer is still in the request counter, 4xx included, by code.
    for code in ("200", "504", "502", "400", "499"):
        assert get("llmrouter_requests_total", {**labels, "code": code}) == 1


def test_the_exposition_writes_exactly_the_documented_boundaries() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record(200, 0.2, ttft_s=0.1))
    text = generate_latest(metrics.registry).decode()
    for name in ("llmrouter_request_duration_seconds", "llmrouter_time_to_first_token_seconds"):
        les = [
            line.split('le="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith(name + "_bucket{")
        ]
        assert les == [le_label(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    assert le_label(2) == "2.0" and le_label(Decimal("0.5")) == "0.5"


@pytest.mark.parametrize(
    ("status", "event", "error"),
    [(200, True, False), (201, True, False), (400, False, False), (404, False, False),
     (429, False, False), (499, False, False), (500, True, True), (502, True, True),
     (503, True, True), (504, True, True)],
)  # fmt: skip
def test_which_answers_are_events_and_which_are_errors(
    status: int, event: bool, error: bool
) -> None:
    assert counts_for_sli(status) is event
    assert is_error(status) is error


def test_bucket_for_accepts_only_boundaries() -> None:
    assert bucket_for(Decimal("2")) == 2.0
    assert bucket_for(0.5) == 0.5
    assert bucket_for(Decimal("1.9")) is None
    assert bucket_for(400) is None
