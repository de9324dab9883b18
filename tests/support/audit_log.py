"""Write an audit log the way the gateway does: ``python -m tests.support.audit_log LOG
CHECKPOINTS SIGNING_KEY COUNT``, or ``write_log`` in a test's own event loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from llmrouter.gateway.audit.chain import Chain, Signer
from llmrouter.gateway.audit.checkpoints import CheckpointFile, RedisCheckpoints
from llmrouter.gateway.audit.pseudonym import Pseudonyms
from llmrouter.gateway.audit.sinks import RotatingFile
from llmrouter.gateway.audit.writer import AuditWriter


async def write_log(
    log: Path,
    checkpoints: Path,
    signer: Signer,
    count: int,
    every: int = 4,
    redis_url: str | None = None,
) -> Chain:
    writer = AuditWriter(
        RotatingFile(log),
        signer,
        Pseudonyms.random(),
        checkpoint_stores=[
            CheckpointFile(checkpoints),
            *([RedisCheckpoints(redis_url)] if redis_url else []),
        ],
        checkpoint_every=every,
    )
    await writer.start()
    for n in range(count):
        # One at a time: a checkpoint falls every `every` records, as it does under load.
        await writer.write({"type": "request", "n": n, "tenant": "acme"})
    await writer.close()
    return writer.chain


def main() -> None:
    log, checkpoints, key, count = sys.argv[1:5]
    signer = Signer.from_pem(Path(key).read_bytes())
    asyncio.run(write_log(Path(log), Path(checkpoints), signer, int(count)))


if __name__ == "__main__":
    main()
