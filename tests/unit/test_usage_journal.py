"""The usage journal: what a dead process leaves is adopted by the next, torn lines skipped."""

from __future__ import annotations

import os
from pathlib import Path

from llmrouter.gateway.state import BudgetCheck, ConcurrencyCheck, CounterCheck, Plan, Settlement
from llmrouter.gateway.state.journal import Journal, Pending

PLAN = Plan(
    counters=(CounterCheck("tokensPerMonth", "tenant ns/a", "k:tpmo", 100, 30, 2e9),),
    concurrency=(ConcurrencyCheck("tenant ns/a", "k:inflight", 2),),
    budget=BudgetCheck("tenant ns/a", "k:spend", "ns/a", 10**9, 2e9, 5000),
    token_counters=(("k:tpmo", 30),),
    lease_s=35.0,
    outage_policy="fail-closed",
)


def entry(n: int) -> Pending:
    s = Settlement(f"rid{n}", 1.8e9, "ns/a", "2027-01-15", "2027-01", "m", "key:ci", 7, n, 9)
    return Pending(PLAN, s, admitted_locally=n % 2 == 0)


async def test_a_dead_processs_journal_is_adopted_by_the_next(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    for n in range(3):
        first.append(entry(n))
    first.sync()
    other = Journal(tmp_path)
    assert other.adopt() == []  # its writer is alive: not an orphan
    other.close()  # an empty journal leaves nothing behind
    assert first.path is not None and first._fd is not None
    with first.path.open("ab") as f:
        f.write(b'{"plan": {"coun')  # torn by a crash mid-write
    os.close(first._fd)  # the process dies: its lock goes with it
    second = Journal(tmp_path)
    assert second.adopt() == [entry(0), entry(1), entry(2)]
    second.clear()  # replayed
    assert not first.path.exists()
    second.close()
    assert list(tmp_path.iterdir()) == []


async def test_nothing_is_written_without_a_folder() -> None:
    journal = Journal(None)
    journal.append(entry(1))
    journal.sync()
    assert not journal.durable and journal.adopt() == []
