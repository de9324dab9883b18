"""The audit writer: records in, chained lines out, signed checkpoints now and then.

Request records are queued (``submit``): the request path pays a deque append, and a full
queue drops the record, counts it, and says so in the next checkpoint, rather than slow or
fail requests. Admin and key events wait (``write``) until their line is on disk, and fail
when it cannot be written: such an action is not acknowledged without its record. One
background task seals, writes and checkpoints, so the chain has one writer and no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmrouter.gateway.audit.chain import Chain, Signer, timestamp
from llmrouter.gateway.audit.checkpoints import CheckpointStore
from llmrouter.gateway.audit.pseudonym import Pseudonyms
from llmrouter.gateway.audit.sinks import Sink

logger = logging.getLogger(__name__)

BATCH = 512


class AuditUnavailable(Exception):
    """The audit log cannot be written: the action that needed a record must fail."""


@dataclass(slots=True)
class _Item:
    record: dict[str, Any]
    at: float
    done: asyncio.Future[None] | None = None
    """Set for events that wait until their line is on disk."""
    reliable: bool = False
    """Never dropped, though nobody waits for it (configuration changes)."""


class AuditWriter:
    def __init__(
        self,
        file: Sink,
        signer: Signer,
        pseudonyms: Pseudonyms,
        *,
        copies: Sequence[Sink] = (),
        checkpoint_stores: Sequence[CheckpointStore] = (),
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
        chain: Chain | None = None,
    ) -> None:
        self.file = file
        self.copies = list(copies)
        self.signer = signer
        self.pseudonyms = pseudonyms
        self.checkpoint_stores = list(checkpoint_stores)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_queue = max_queue
        self.clock = clock
        self.chain = chain or Chain()
        self.dropped = 0
        """Request records dropped (queue full, or their batch failed to write)."""
        self.written = 0
        self.checkpoint_failures = 0
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._checkpointed = (-1, -1)
        self._last_checkpoint_at = clock()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue a record without waiting; False when the queue was full and it was dropped."""
        if len(self._queue) >= self.max_queue or self._closing:
            self.dropped += 1
            return False
        self._queue.append(_Item(record, self.clock()))
        if not self._wake.is_set():
            self._wake.set()
        return True

    def submit_reliable(self, record: dict[str, Any]) -> None:
        """Queue a record that is never dropped, though nobody waits for it."""
        self._queue.append(_Item(record, self.clock(), reliable=True))
        self._wake.set()

    async def write(self, record: dict[str, Any]) -> None:
        """Return once the record is on disk; raise AuditUnavailable when it cannot be."""
        if self._task is None or self._task.done():
            raise AuditUnavailable("the audit writer is not running")
        done = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(record, self.clock(), done))
        self._wake.set()
        await done

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit writer")

    async def close(self) -> None:
        """Write what is queued, sign a last checkpoint, close the files."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._checkpoint()
        for store in self.checkpoint_stores:
            with contextlib.suppress(Exception):
                await store.close()
        self.file.close()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                wait = self._last_checkpoint_at + self.checkpoint_interval_s - self.clock()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.01))
            if self._queue:
                await self._write_batch()
            if self._checkpoint_due():
                await self._checkpoint()

    def _checkpoint_due(self) -> bool:
        since = self.chain.seq - max(self._checkpointed[0], 0)
        if since >= self.checkpoint_every:
            return True
        return self.clock() - self._last_checkpoint_at >= self.checkpoint_interval_s

    async def _write_batch(self) -> None:
        items = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        mark = self.chain.mark()
        lines: list[bytes] = []
        sealed: list[_Item] = []
        for item in items:
            try:
                lines.append(self.chain.seal({**item.record, "time": timestamp(item.at)}))
            except ValueError as exc:
                logger.error(
                    "audit record of type %r not written: %s", item.record.get("type"), exc
                )
                if item.done is not None and not item.done.done():
                    item.done.set_exception(AuditUnavailable(f"audit record invalid: {exc}"))
                continue
            sealed.append(item)
        durable = any(item.done is not None or item.reliable for item in sealed)
        try:
            await asyncio.to_thread(self.file.write, lines, durable)
        except OSError as exc:
            self.chain.rewind(mark)
            logger.error("audit log not written (%d records): %s", len(lines), exc)
            for item in sealed:
                if item.done is not None:
                    if not item.done.done():
                        item.done.set_exception(AuditUnavailable(f"audit log: {exc}"))
                elif item.reliable:
                    self._queue.appendleft(item)  # tried again with the next batch
                else:
                    self.dropped += 1
            if any(item.reliable for item in sealed):
                await asyncio.sleep(1.0)
            return
        self.written += len(lines)
        for copy in self.copies:
            copy.write(lines, False)
        for item in sealed:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)

    async def _checkpoint(self) -> None:
        now = self.clock()
        self._last_checkpoint_at = now
        state = (self.chain.seq, self.dropped)
        if state == self._checkpointed:
            return
        try:
            # What a checkpoint covers must be on disk before it is signed.
            await asyncio.to_thread(self.file.write, [], True)
        except OSError as exc:
            logger.error("audit log not synced, checkpoint skipped: %s", exc)
            return
        line = self.signer.checkpoint(self.chain, self.dropped, now)
        for store in self.checkpoint_stores:
            try:
                await store.add(line)
            except Exception as exc:
                self.checkpoint_failures += 1
                logger.error("audit checkpoint not stored in %s: %s", store.name, exc)
        self._checkpointed = state
