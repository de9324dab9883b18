"""State in Redis: every gateway replica enforces the same limits together.

Each admission is one Lua script that checks every limit and, only if all pass, counts
them all: no read-modify-write races between replicas.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from llmrouter.gateway.state import (
    STAT_FIELDS,
    Plan,
    Refusal,
    Settlement,
    StateUnavailable,
    TenantUsage,
    TrialStats,
    UsageRow,
)
from llmrouter.gateway.state import keys as k
from llmrouter.gateway.state.resp import PipelinedRedis, RedisUnavailable

# Leases: a slot or reservation whose holder vanished (a gateway killed mid-request)
# frees itself when its lease ends, swept by the next admission of the same scope. Sets and
# hashes that empty vanish by themselves; the reservation total is deleted at zero.
# A reservation is a member ``request id:nano-dollars`` of the tenant's leases (scored by
# its lease end) and part of the tenant's total: settling needs no lookup of its amount.
# KEYS: counters…, concurrency sets…, [spend, reservation leases, reservation total]
# ARGV: now, request id, lease end, idle ttl, #counters, (limit, amount, ttl ms)…,
#       #concurrency, limit…, budget limit (-1 when none), reservation
# Returns 0 when admitted ({0, spend} with a budget), else the 1-based index of the first
# check that refused; the budget's refusal as {index, spend, reserved}.
ADMIT = """
local now, rid = tonumber(ARGV[1]), ARGV[2]
local lease_end, idle = tonumber(ARGV[3]), ARGV[4]
local nc = tonumber(ARGV[5])
local a = 6
for i = 1, nc do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then return i end
  a = a + 3
end
local nk = tonumber(ARGV[a])
local b = a + 1
for j = 1, nk do
  local key = KEYS[nc + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[b]) then return nc + j end
  b = b + 1
end
local budget, reserve = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
local s = nc + nk
local admitted = 0
if budget >= 0 then
  local leases, total = KEYS[s + 2], KEYS[s + 3]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 100)) do
    if redis.call('DECRBY', total, string.match(m, ':(%d+)$')) <= 0 then
      redis.call('DEL', total)
    end
    redis.call('ZREM', leases, m)
  end
  local spent = tonumber(redis.call('GET', KEYS[s + 1]) or '0')
  local reserved = tonumber(redis.call('GET', total) or '0')
  local used = spent + reserved
  if used >= budget or used + reserve > budget then return {s + 1, spent, reserved} end
  admitted = {0, spent}
end
a = 6
for i = 1, nc do
  redis.call('INCRBY', KEYS[i], ARGV[a + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
  a = a + 3
end
for j = 1, nk do
  redis.call('ZADD', KEYS[nc + j], lease_end, rid)
  redis.call('EXPIRE', KEYS[nc + j], idle)
end
if budget >= 0 and reserve > 0 then
  redis.call('ZADD', KEYS[s + 2], lease_end, rid .. ':' .. ARGV[b + 1])
  redis.call('INCRBY', KEYS[s + 3], reserve)
end
return admitted
"""

# KEYS: spend, usage hash, token counters…, concurrency sets to leave…,
#       [reservation leases, reservation total], [replay marker]
# ARGV: #token counters, cost, requests field, input field, output field, cost field,
#       input tokens, output tokens, retention, request id, #concurrency sets,
#       reservation to release (its member, or empty), replay mode, token corrections…
# Replay modes: 0 live; 1 a journaled request admitted here, applied only while its slots
# or reservation are still held (else it was applied before its reply was lost); 2 a
# journaled request admitted during an outage. Replays apply once (marker).
# Returns the month's spend after this request, or -1 for a replay already applied.
SETTLE = """
local ntok, nk = tonumber(ARGV[1]), tonumber(ARGV[11])
local rid, mode = ARGV[10], tonumber(ARGV[13])
local r = 3 + ntok + nk
if mode > 0 then
  if mode == 1 and (nk > 0 or ARGV[12] ~= '') then
    local held = false
    for i = 3 + ntok, 2 + ntok + nk do
      if redis.call('ZSCORE', KEYS[i], rid) then held = true end
    end
    if ARGV[12] ~= '' and redis.call('ZSCORE', KEYS[r], ARGV[12]) then held = true end
    if not held then return -1 end
  end
  if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', 604800) then return -1 end
end
for i = 3, 2 + ntok do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i + 11]) end
end
for i = 3 + ntok, 2 + ntok + nk do
  redis.call('ZREM', KEYS[i], rid)
end
if ARGV[12] ~= '' and redis.call('ZREM', KEYS[r], ARGV[12]) == 1 then
  if redis.call('DECRBY', KEYS[r + 1], string.match(ARGV[12], ':(%d+)$')) <= 0 then
    redis.call('DEL', KEYS[r + 1])
  end
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

# KEYS: concurrency sets…, [reservation leases, reservation total]
# ARGV: request id, #concurrency sets, reservation member (or empty)
RELEASE = """
local rid, nk, member = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for i = 1, nk do redis.call('ZREM', KEYS[i], rid) end
if member ~= '' and redis.call('ZREM', KEYS[nk + 1], member) == 1 then
  if redis.call('DECRBY', KEYS[nk + 2], string.match(member, ':(%d+)$')) <= 0 then
    redis.call('DEL', KEYS[nk + 2])
  end
end
return 0
"""


# KEYS: per-unit sums (hash), the variant's sums (hash)
# ARGV: unit, ttl, then (metric, numerator increment, denominator increment)…
# Each unit's running m and d give the change of Σm², Σd², Σmd without keeping requests.
RECORD_TRIAL = """
local unit, ttl = ARGV[1], ARGV[2]
if redis.call('HSETNX', KEYS[1], unit, '1') == 1 then
  redis.call('HINCRBY', KEYS[2], 'units', 1)
end
for i = 3, #ARGV, 3 do
  local metric, dm, dd = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local fm, fd = unit .. '\31' .. metric .. '\31m', unit .. '\31' .. metric .. '\31d'
  local om = tonumber(redis.call('HGET', KEYS[1], fm) or '0')
  local od = tonumber(redis.call('HGET', KEYS[1], fd) or '0')
  local nm = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], fm, ARGV[i + 1]))
  local nd = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], fd, ARGV[i + 2]))
  if od == 0 and nd > 0 then redis.call('HINCRBY', KEYS[2], metric .. ':n', 1) end
  redis.call('HINCRBYFLOAT', KEYS[2], metric .. ':m', ARGV[i + 1])
  redis.call('HINCRBYFLOAT', KEYS[2], metric .. ':d', ARGV[i + 2])
  redis.call('HINCRBYFLOAT', KEYS[2], metric .. ':mm', string.format('%.17g', nm * nm - om * om))
  redis.call('HINCRBYFLOAT', KEYS[2], metric .. ':dd', string.format('%.17g', nd * nd - od * od))
  redis.call('HINCRBYFLOAT', KEYS[2], metric .. ':md', string.format('%.17g', nm * nd - om * od))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 0
"""

IDLE_SLOTS_TTL_S = 86400
"""A concurrency set nobody touched for this long is dropped (a scope gone quiet)."""

REPLAY_ADMITTED_HERE = 1
REPLAY_ADMITTED_LOCALLY = 2


def _member(plan: Plan, request_id: str) -> str:
    """The request's reservation in the tenant's leases (see ADMIT), or empty for none."""
    b = plan.budget
    return f"{request_id}:{b.reserve_nano}" if b is not None and b.reserve_nano else ""


class RedisStore:
    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self._redis = PipelinedRedis(url, timeout_s=timeout_s)
        self.spend_seen: dict[str, int] = {}
        """The month's spend by spend key, as Redis last reported it: where the local
        limiter starts during an outage."""

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        await self._call(self._redis.execute(b"PING"))

    async def admit(self, plan: Plan, request_id: str, now: float) -> Refusal | None:
        keys = [c.key for c in plan.counters] + [c.key for c in plan.concurrency]
        lease = max(1, math.ceil(plan.lease_s))
        idle = max(lease, IDLE_SLOTS_TTL_S)
        args: list[Any] = [now, request_id, now + lease, idle, len(plan.counters)]
        for c in plan.counters:
            # Relative expiry: the window ends when the caller's clock says so.
            args += [c.limit, c.amount, max(1, math.ceil((c.ends_at - now) * 1000))]
        args.append(len(plan.concurrency))
        args += [c.limit for c in plan.concurrency]
        b = plan.budget
        if b is not None:
            keys += [b.key, *k.reservations(b.tenant)]
            args += [b.limit_nano, b.reserve_nano]
        else:
            args += [-1, 0]
        reply = await self._call(self._redis.evalsha(ADMIT, keys, args))
        if isinstance(reply, list):
            if b is not None:
                self.spend_seen[b.key] = int(reply[1])
            index = int(reply[0]) - 1
        else:
            index = int(reply) - 1
        if index < 0:
            return None
        if index < len(plan.counters):
            c = plan.counters[index]
            return Refusal(c.name, c.scope, c.limit, c.ends_at - now)
        index -= len(plan.counters)
        if index < len(plan.concurrency):
            cc = plan.concurrency[index]
            return Refusal("maxConcurrent", cc.scope, cc.limit, 1.0)
        assert b is not None and isinstance(reply, list)
        return Refusal(
            "budget",
            b.scope,
            b.limit_nano,
            b.ends_at - now,
            int(reply[1]),
            int(reply[2]),
            b.reserve_nano,
        )

    def _held_keys(self, plan: Plan) -> list[str]:
        keys = [cc.key for cc in plan.concurrency]
        if plan.budget is not None:
            keys += k.reservations(plan.budget.tenant)
        return keys

    async def release(self, plan: Plan, request_id: str) -> None:
        if plan.concurrency or plan.budget is not None:
            keys = self._held_keys(plan)
            args = [request_id, len(plan.concurrency), _member(plan, request_id)]
            await self._call(self._redis.evalsha(RELEASE, keys, args))

    async def settle(
        self, plan: Plan, s: Settlement, *, release: bool = False, replay: int = 0
    ) -> int:
        """Add a finished request's usage; ``release`` its slots and reservation too.
        ``replay`` (journaled settlements, see SETTLE) applies it at most once."""
        actual = s.input_tokens + s.output_tokens
        fields = [k.usage_field(s.model, s.user, what) for what in k.USAGE_FIELDS]
        keys = [k.spend(s.tenant, s.month), k.usage(s.tenant, s.day)]
        keys += [key for key, _ in plan.token_counters]
        held = self._held_keys(plan) if release else []
        keys += held
        args: list[int | str] = [
            len(plan.token_counters),
            s.cost_nano,
            *fields,
            s.input_tokens,
            s.output_tokens,
            k.USAGE_RETENTION_S,
            s.request_id,
            len(plan.concurrency) if release else 0,
            _member(plan, s.request_id) if release else "",
            replay,
        ]
        if replay:
            keys.append(k.replayed(s.request_id))
        # A request admitted during an outage counted its estimate only locally.
        local = replay == REPLAY_ADMITTED_LOCALLY
        args += [actual - (0 if local else estimate) for _, estimate in plan.token_counters]
        spend = int(await self._call(self._redis.evalsha(SETTLE, keys, args)))
        if spend >= 0:
            self.spend_seen[keys[0]] = spend
        return spend

    async def finish(self, plan: Plan, s: Settlement) -> int:
        """release and settle in one round trip."""
        return await self.settle(plan, s, release=True)

    async def claim_event(self, name: str, ttl_s: int) -> bool:
        reply = await self._call(
            self._redis.execute(b"SET", k.event(name), b"1", b"NX", b"EX", ttl_s)
        )
        return reply is not None

    async def record_trial(
        self, key: str, unit: str, increments: Mapping[str, tuple[float, float]], ttl_s: int
    ) -> None:
        args: list[Any] = [unit, ttl_s]
        for metric, (dm, dd) in increments.items():
            args += [metric, repr(float(dm)), repr(float(dd))]
        await self._call(self._redis.evalsha(RECORD_TRIAL, [f"{key}:units", f"{key}:sums"], args))

    async def trial_stats(self, key: str) -> TrialStats:
        flat = await self._call(self._redis.execute(b"HGETALL", f"{key}:sums"))
        units, sums = 0, dict[str, dict[str, float]]()
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            field = name.decode()
            if field == "units":
                units = int(value)
                continue
            metric, what = field.rsplit(":", 1)
            sums.setdefault(metric, dict.fromkeys(STAT_FIELDS, 0.0))[what] = float(value)
        return TrialStats(units, sums)

    async def remember(self, name: str, value: bytes, ttl_s: int) -> None:
        await self._call(self._redis.execute(b"SET", k.remembered(name), value, b"EX", ttl_s))

    async def take(self, name: str) -> bytes | None:
        value = await self._call(self._redis.execute(b"GETDEL", k.remembered(name)))
        return value if isinstance(value, bytes) else None

    async def recall(self, name: str) -> bytes | None:
        value = await self._call(self._redis.execute(b"GET", k.remembered(name)))
        return value if isinstance(value, bytes) else None

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
