"""State in Redis: every gateway replica enforces the same limits together.

Each admission is one Lua script that checks every limit and, only if all pass, counts
them all: no read-modify-write races between replicas.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from llmrouter.gateway.state import (
    Plan,
    Refusal,
    Settlement,
    StateUnavailable,
    TenantUsage,
    UsageRow,
)
from llmrouter.gateway.state import keys as k
from llmrouter.gateway.state.resp import PipelinedRedis, RedisUnavailable

# KEYS: counters…, concurrency sets…, [budget spend]
# ARGV: now, request id, lease, #counters, (limit, amount, ttl ms)…, #concurrency,
#       limit…, budget limit (-1 when none)
# Returns 0 when admitted, else the 1-based index of the first check that refused.
ADMIT = """
local now = tonumber(ARGV[1])
local rid, lease = ARGV[2], tonumber(ARGV[3])
local nc = tonumber(ARGV[4])
local a = 5
for i = 1, nc do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then return i end
  a = a + 3
end
local nk = tonumber(ARGV[a])
local b = a + 1
for j = 1, nk do
  local key = KEYS[nc + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - lease)
  if redis.call('ZCARD', key) >= tonumber(ARGV[b]) then return nc + j end
  b = b + 1
end
local budget = tonumber(ARGV[b])
if budget >= 0 then
  if tonumber(redis.call('GET', KEYS[nc + nk + 1]) or '0') >= budget then
    return nc + nk + 1
  end
end
a = 5
for i = 1, nc do
  redis.call('INCRBY', KEYS[i], ARGV[a + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
  a = a + 3
end
for j = 1, nk do
  redis.call('ZADD', KEYS[nc + j], now, rid)
  redis.call('EXPIRE', KEYS[nc + j], lease)
end
return 0
"""

# KEYS: spend, usage hash, token counters…, concurrency sets to leave…
# ARGV: #token counters, cost, requests field, input field, output field, cost field,
#       input tokens, output tokens, retention, request id, correction of each token counter…
# Returns the month's spend after this request.
SETTLE = """
local ntok = tonumber(ARGV[1])
for i = 3, 2 + ntok do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i + 8]) end
end
for i = 3 + ntok, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[10])
end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], ARGV[4], ARGV[7])
redis.call('HINCRBY', KEYS[2], ARGV[5], ARGV[8])
redis.call('HINCRBY', KEYS[2], ARGV[6], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[9])
local spend = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[9])
return spend
"""


class RedisStore:
    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self._redis = PipelinedRedis(url, timeout_s=timeout_s)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        await self._call(self._redis.execute(b"PING"))

    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        keys = [c.key for c in plan.counters] + [c.key for c in plan.concurrency]
        args: list[Any] = [now, request_id, k.CONCURRENCY_LEASE_S, len(plan.counters)]
        for c in plan.counters:
            # Relative expiry: the window ends when the caller's clock says so.
            args += [c.limit, c.amount, max(1, math.ceil((c.ends_at - now) * 1000))]
        args.append(len(plan.concurrency))
        args += [c.limit for c in plan.concurrency]
        if plan.budget is not None:
            keys.append(plan.budget.key)
            args.append(plan.budget.limit_nano)
        else:
            args.append(-1)
        refused = int(await self._call(self._redis.evalsha(ADMIT, keys, args)))
        if refused == 0:
            return None
        index = refused - 1
        if index < len(plan.counters):
            c = plan.counters[index]
            return Refusal(c.name, c.scope, c.limit, c.ends_at - now)
        index -= len(plan.counters)
        if index < len(plan.concurrency):
            cc = plan.concurrency[index]
            return Refusal("maxConcurrent", cc.scope, cc.limit, 1.0)
        assert plan.budget is not None
        return Refusal(
            "budget", plan.budget.scope, plan.budget.limit_nano, plan.budget.ends_at - now
        )

    async def release(self, plan: Plan, request_id: str) -> None:
        if plan.concurrency:
            removals = (self._redis.execute(b"ZREM", c.key, request_id) for c in plan.concurrency)
            await self._call(asyncio.gather(*removals))

    async def settle(self, plan: Plan, s: Settlement, release_id: str | None = None) -> int:
        actual = s.input_tokens + s.output_tokens
        fields = [k.usage_field(s.model, s.user, what) for what in k.USAGE_FIELDS]
        keys = [k.spend(s.tenant, s.month), k.usage(s.tenant, s.day)]
        keys += [key for key, _ in plan.token_counters]
        if release_id is not None:
            keys += [cc.key for cc in plan.concurrency]
        args: list[int | str] = [
            len(plan.token_counters),
            s.cost_nano,
            *fields,
            s.input_tokens,
            s.output_tokens,
            k.USAGE_RETENTION_S,
            release_id or "",
        ]
        args += [actual - estimate for _, estimate in plan.token_counters]
        return int(await self._call(self._redis.evalsha(SETTLE, keys, args)))

    async def finish(self, plan: Plan, request_id: str, s: Settlement) -> int:
        """release and settle in one round trip."""
        return await self.settle(plan, s, release_id=request_id)

    async def spend(self, tenant: str, month: str) -> int:
        return int(await self._call(self._redis.execute(b"GET", k.spend(tenant, month))) or 0)

    async def usage(self, tenant: str, days: list[str]) -> TenantUsage:
        hashes = await self._call(
            asyncio.gather(*(self._redis.execute(b"HGETALL", k.usage(tenant, d)) for d in days))
        )
        out = TenantUsage()
        for flat in hashes:
            for name, value in zip(flat[::2], flat[1::2], strict=True):
                model, user, what = name.decode().split(k.FIELD_SEP)
                row = out.rows.setdefault((model, user), UsageRow(model, user))
                setattr(row, what, getattr(row, what) + int(value))
        return out

    async def close(self) -> None:
        await self._redis.close()
