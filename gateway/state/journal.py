"""Settlements that wait for the shared state, kept on disk so a restart loses none.

An append-only file of JSON lines, one per settlement, fsynced once per batch (the
settlements of one event-loop turn). It is replayed into Redis when Redis answers again
and, by the next process to start, after a crash; then emptied. Replays are idempotent (see
the SETTLE script), so a crash in the middle of one only repeats it. Bounded: when full,
the gateway stops admitting rather than serve requests it could not account for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from llmrouter.gateway.state import (
    BudgetCheck,
    ConcurrencyCheck,
    CounterCheck,
    Plan,
    Settlement,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """One finished request whose usage the shared state has not taken yet."""

    plan: Plan
    settlement: Settlement
    admitted_locally: bool
    """Admitted by this process's limiter during an outage: the shared state holds no slot
    or reservation of it."""


def _encode(entry: Pending) -> bytes:
    return orjson.dumps(dataclasses.asdict(entry)) + b"\n"


def _decode(line: bytes) -> Pending:
    doc: dict[str, Any] = orjson.loads(line)
    p = doc["plan"]
    plan = Plan(
        counters=tuple(CounterCheck(**c) for c in p["counters"]),
        concurrency=tuple(ConcurrencyCheck(**c) for c in p["concurrency"]),
        budget=BudgetCheck(**p["budget"]) if p["budget"] else None,
        token_counters=tuple((key, amount) for key, amount in p["token_counters"]),
        lease_s=p["lease_s"],
        outage_policy=p["outage_policy"],
    )
    return Pending(plan, Settlement(**doc["settlement"]), doc["admitted_locally"])


class Journal:
    """Each process appends to a file of its own in ``folder``, locked while it lives; a
    file nobody holds is a dead process's, and the next process to start adopts it."""

    def __init__(self, folder: Path | None, max_entries: int = 1_000_000) -> None:
        self.folder = folder
        self.max_entries = max_entries
        self._unsynced: list[bytes] = []
        self._sync_scheduled = False
        self._fd: int | None = None
        self._adopted: list[Path] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = folder / f"usage-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            self.path = None

    @property
    def durable(self) -> bool:
        return self._fd is not None

    def adopt(self) -> list[Pending]:
        """What dead processes left, oldest file first; a torn last line (a crash
        mid-write) is skipped."""
        if self.folder is None:
            return []
        entries: list[Pending] = []
        files = sorted(self.folder.glob("usage-*.jsonl"), key=lambda f: f.stat().st_mtime)
        for path in files:
            if path == self.path or not _orphaned(path):
                continue
            self._adopted.append(path)
            with path.open("rb") as f:
                for number, line in enumerate(f, 1):
                    try:
                        entries.append(_decode(line))
                    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                        logger.error("usage journal %s line %d unreadable: %s", path, number, exc)
        return entries

    def append(self, entry: Pending) -> None:
        if self._fd is None:
            return
        self._unsynced.append(_encode(entry))
        if not self._sync_scheduled:
            self._sync_scheduled = True
            asyncio.get_running_loop().call_soon(self.sync)

    def sync(self) -> None:
        """Write and fsync what this turn appended: one fsync for the whole batch."""
        self._sync_scheduled = False
        if self._fd is None or not self._unsynced:
            return
        batch, self._unsynced = b"".join(self._unsynced), []
        os.write(self._fd, batch)
        os.fsync(self._fd)

    def clear(self) -> None:
        """Everything in it, and in the files it adopted, reached the shared state."""
        self._unsynced.clear()
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        for path in self._adopted:
            path.unlink(missing_ok=True)
        self._adopted.clear()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.path is not None and self.path.stat().st_size == 0:
                self.path.unlink(missing_ok=True)


def _orphaned(path: Path) -> bool:
    """Whether no living process holds ``path`` (its lock goes with its process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # an adopted file is only read, then removed once replayed
    return True
