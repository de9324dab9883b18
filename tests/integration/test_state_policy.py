"""One policy suite, run against both state stores: in memory, and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from llmrouter.gateway.admission import Ask, plan_admission
from llmrouter.gateway.auth import Identity
from llmrouter.gateway.config import Budget, Limits, TenantPolicy
from llmrouter.gateway.periods import day_id, month_id
from llmrouter.gateway.state import Plan, Settlement, StateStore, to_nano
from llmrouter.gateway.state.memory import MemoryStore
from llmrouter.gateway.state.redis import RedisStore

T0 = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC).timestamp()
NEXT_MONTH = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    s: StateStore
    if request.param == "memory":
        s = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


def identity(
    key_limits: Limits | None = None, budget: Budget | None = None, **limits: Any
) -> Identity:
    tenant = TenantPolicy(
        id="ns/acme",
        display_name="acme",
        models=frozenset({"m"}),
        limits=Limits(**limits),
        budget=budget,
    )
    return Identity(
        tenant=tenant, key_name="ci", role="developer", user="key:ci", key_limits=key_limits
    )


def settlement(
    now: float, tokens_in: int = 0, tokens_out: int = 0, cost_nano: int = 0, rid: str = "r"
) -> Settlement:
    return Settlement(
        request_id=rid,
        at=now,
        tenant="ns/acme",
        day=day_id(now),
        month=month_id(now),
        model="m",
        user="key:ci",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_nano=cost_nano,
    )


async def admit_n(
    store: StateStore, who: Identity, n: int, now: float, estimate: int = 0
) -> list[Any]:
    results = []
    for i in range(n):
        plan = plan_admission(who, Ask(0, estimate), now)
        results.append(await store.admit(plan, f"r{now}-{i}", now))
    return results


async def test_requests_per_minute_boundary_and_next_minute(store: StateStore) -> None:
    who = identity(requests_per_minute=3)
    results = await admit_n(store, who, 4, T0)
    assert results[:3] == [None, None, None]
    refusal = results[3]
    assert (refusal.name, refusal.scope, refusal.limit) == (
        "requestsPerMinute",
        "tenant ns/acme",
        3,
    )
    assert refusal.retry_after_s == pytest.approx(55)
    assert await admit_n(store, who, 1, T0 + 60) == [None]


async def test_requests_per_day_boundary_and_next_day(store: StateStore) -> None:
    who = identity(requests_per_day=2)
    results = await admit_n(store, who, 3, T0)
    assert results[:2] == [None, None] and results[2].name == "requestsPerDay"
    assert await admit_n(store, who, 1, T0 + 86400) == [None]


async def test_tokens_per_minute_estimate_is_corrected_by_actual_usage(
    store: StateStore,
) -> None:
    who = identity(tokens_per_minute=100)
    first = plan_admission(who, Ask(0, 60), T0)
    assert await store.admit(first, "a", T0) is None
    second = plan_admission(who, Ask(0, 60), T0)
    refusal = await store.admit(second, "b", T0)
    assert refusal is not None and refusal.name == "tokensPerMinute"
    await store.settle(first, settlement(T0, tokens_in=4, tokens_out=6))  # 10, not 60
    assert await store.admit(second, "b", T0) is None  # 10 + 60 <= 100
    over = await store.admit(plan_admission(who, Ask(0, 31), T0), "c", T0)
    assert over is not None and over.name == "tokensPerMinute"
    assert await store.admit(plan_admission(who, Ask(0, 30), T0), "c", T0) is None  # exactly 100


async def test_a_request_larger_than_the_limit_passes_an_empty_window(store: StateStore) -> None:
    who = identity(tokens_per_minute=100)
    assert await store.admit(plan_admission(who, Ask(0, 5000), T0), "big", T0) is None
    assert (await store.admit(plan_admission(who, Ask(0, 1), T0), "next", T0)) is not None


async def test_tokens_per_month_and_the_month_rollover(store: StateStore) -> None:
    who = identity(tokens_per_month=50)
    plan = plan_admission(who, Ask(0, 10), T0)
    assert await store.admit(plan, "a", T0) is None
    await store.settle(plan, settlement(T0, tokens_in=20, tokens_out=30))  # 50 used
    refusal = await store.admit(plan_admission(who, Ask(0, 1), T0), "b", T0)
    assert refusal is not None and refusal.name == "tokensPerMonth"
    assert refusal.retry_after_s == pytest.approx(NEXT_MONTH - 1 - T0)
    assert await store.admit(plan_admission(who, Ask(0, 1), NEXT_MONTH), "c", NEXT_MONTH) is None


async def test_max_concurrent_holds_until_release(store: StateStore) -> None:
    who = identity(max_concurrent=2)
    plans = [plan_admission(who, Ask(0, 0), T0) for _ in range(3)]
    assert await store.admit(plans[0], "a", T0) is None
    assert await store.admit(plans[1], "b", T0) is None
    refusal = await store.admit(plans[2], "c", T0)
    assert refusal is not None and refusal.name == "maxConcurrent"
    await store.release(plans[0], "a")
    assert await store.admit(plans[2], "c", T0) is None


async def test_budget_blocks_when_spent_and_renews_next_month(store: StateStore) -> None:
    who = identity(budget=Budget(monthly_usd=Decimal("0.01")))
    plan = plan_admission(who, Ask(0, 0), T0)
    assert await store.admit(plan, "a", T0) is None
    spend = await store.settle(plan, settlement(T0, cost_nano=to_nano(Decimal("0.01"))))
    assert spend == 10_000_000
    refusal = await store.admit(plan_admission(who, Ask(0, 0), T0), "b", T0)
    assert refusal is not None and refusal.name == "budget"
    assert await store.spend("ns/acme", "2026-11") == 10_000_000
    assert await store.admit(plan_admission(who, Ask(0, 0), NEXT_MONTH), "c", NEXT_MONTH) is None
    assert await store.spend("ns/acme", "2026-12") == 0


async def test_alert_only_budget_never_blocks(store: StateStore) -> None:
    who = identity(budget=Budget(monthly_usd=Decimal("0.01"), block=False))
    plan = plan_admission(who, Ask(0, 0), T0)
    await store.settle(plan, settlement(T0, cost_nano=to_nano(Decimal("1"))))
    assert await store.admit(plan_admission(who, Ask(0, 0), T0), "b", T0) is None


async def test_key_limits_apply_on_top_of_the_tenant_limits(store: StateStore) -> None:
    who = identity(key_limits=Limits(requests_per_minute=1), requests_per_minute=10)
    results = await admit_n(store, who, 2, T0)
    assert results[0] is None
    assert (results[1].name, results[1].scope) == ("requestsPerMinute", "key ns/acme/ci")


async def test_a_refused_request_counts_nothing(store: StateStore) -> None:
    who = identity(requests_per_minute=5, max_concurrent=1)
    assert await store.admit(plan_admission(who, Ask(0, 0), T0), "a", T0) is None
    for i in range(10):  # refused by concurrency: the request counter must not move
        assert (await store.admit(plan_admission(who, Ask(0, 0), T0), f"x{i}", T0)) is not None
    await store.release(plan_admission(who, Ask(0, 0), T0), "a")
    results = []
    for i in range(5):
        plan = plan_admission(who, Ask(0, 0), T0)
        results.append(await store.admit(plan, f"y{i}", T0))
        await store.release(plan, f"y{i}")
    assert results[:4] == [None] * 4
    assert results[4] is not None and results[4].name == "requestsPerMinute"


async def test_usage_is_summed_by_model_and_user_over_days(store: StateStore) -> None:
    plan = Plan()
    await store.settle(plan, settlement(T0, 10, 5, 100))
    await store.settle(plan, settlement(T0 + 60, 1, 1, 1))
    await store.settle(plan, settlement(T0 + 86400, 7, 7, 7))
    one_day = await store.usage("ns/acme", [day_id(T0)])
    row = one_day.rows[("m", "key:ci")]
    assert (row.requests, row.input_tokens, row.output_tokens, row.cost_nano) == (2, 11, 6, 101)
    both = await store.usage("ns/acme", [day_id(T0), day_id(T0 + 86400)])
    assert both.rows[("m", "key:ci")].requests == 3
    assert (await store.usage("ns/other", [day_id(T0)])).rows == {}


async def test_finish_releases_and_settles_at_once(store: StateStore) -> None:
    who = identity(max_concurrent=1, tokens_per_minute=100)
    plan = plan_admission(who, Ask(0, 60), T0)
    assert await store.admit(plan, "a", T0) is None
    assert (await store.admit(plan_admission(who, Ask(0, 0), T0), "b", T0)) is not None  # slot held
    spend = await store.finish(
        plan, settlement(T0, tokens_in=5, tokens_out=5, cost_nano=7, rid="a")
    )
    assert spend == 7
    assert await store.admit(plan_admission(who, Ask(0, 90), T0), "c", T0) is None  # 10 + 90 <= 100


async def test_reservations_hold_the_budget_until_settled_or_their_lease_ends(
    store: StateStore,
) -> None:
    who = identity(budget=Budget(monthly_usd=Decimal("0.01")))  # 10,000,000 nano-dollars
    ask = Ask(0, 0, cost_nano=4_000_000, lease_s=30)
    first, second = plan_admission(who, ask, T0), plan_admission(who, ask, T0)
    assert await store.admit(first, "a", T0) is None
    assert await store.admit(second, "b", T0) is None
    refusal = await store.admit(plan_admission(who, ask, T0), "c", T0)
    assert refusal is not None and refusal.name == "budget"
    assert (refusal.spent, refusal.reserved, refusal.needed) == (0, 8_000_000, 4_000_000)
    # settling swaps a reservation for the actual cost
    await store.finish(first, settlement(T0, cost_nano=1_000_000, rid="a"))
    assert await store.admit(plan_admission(who, ask, T0), "c", T0) is None  # 1 + 4 + 4 <= 10
    # a holder that vanished: its reservation ends with its lease, and is never charged
    later = T0 + 31
    assert await store.admit(plan_admission(who, ask, later), "d", later) is None
    assert await store.spend("ns/acme", "2026-11") == 1_000_000
    # releasing twice, or a request id that reserved nothing, changes nothing
    await store.release(second, "b")
    await store.release(second, "b")
    await store.release(second, "nobody")
    d_plan = plan_admission(who, ask, later)
    assert await store.admit(d_plan, "e", later) is None  # 1 + 4 (d) + 4 (e) <= 10
    refused = await store.admit(plan_admission(who, ask, later), "f", later)
    assert refused is not None and refused.reserved == 8_000_000
