"""The operator's audit log: API key creation, rotation, repair and revocation, and the
decisions of Experiments (a verdict reached, traffic routed to a variant).

Same format and tools as the gateway's (llmrouter.gateway.audit), its own chain. Each key
event is on disk before the key Secret is written or deleted: when the log cannot be
written, the handler fails and Kopf retries it later, so no key changes unrecorded.
Configured from the environment (the operator takes no flags):

- ``LLMROUTER_AUDIT_FILE``: the log; unset, no audit log.
- ``LLMROUTER_AUDIT_SIGNING_KEY``: PEM Ed25519 key signing the checkpoints (required with it).
- ``LLMROUTER_AUDIT_CHECKPOINTS``: the checkpoint file (default beside the log).
- ``LLMROUTER_AUDIT_HMAC_KEY_FILE`` or ``LLMROUTER_AUDIT_HMAC_KEY``: the HMAC key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from llmrouter.gateway.audit.chain import Signer
from llmrouter.gateway.audit.checkpoints import CheckpointFile
from llmrouter.gateway.audit.pseudonym import Pseudonyms, read_key
from llmrouter.gateway.audit.sinks import RotatingFile
from llmrouter.gateway.audit.writer import AuditUnavailable, AuditWriter

logger = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 10.0


class _Running:
    writer: AuditWriter | None = None
    loop: asyncio.AbstractEventLoop | None = None


_running = _Running()


def open_writer(env: Mapping[str, str]) -> AuditWriter | None:
    """The writer the environment describes; None without LLMROUTER_AUDIT_FILE. Raises
    ValueError with a readable reason when it is misconfigured."""
    path = env.get("LLMROUTER_AUDIT_FILE")
    if not path:
        return None
    key = env.get("LLMROUTER_AUDIT_SIGNING_KEY")
    if not key:
        raise ValueError("LLMROUTER_AUDIT_FILE needs LLMROUTER_AUDIT_SIGNING_KEY (a PEM file)")
    try:
        signer = Signer.from_pem(Path(key).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"LLMROUTER_AUDIT_SIGNING_KEY {key}: {exc}") from None
    if env.get("LLMROUTER_AUDIT_HMAC_KEY_FILE"):
        pseudonyms = Pseudonyms(read_key(Path(env["LLMROUTER_AUDIT_HMAC_KEY_FILE"]).read_bytes()))
    elif env.get("LLMROUTER_AUDIT_HMAC_KEY"):
        pseudonyms = Pseudonyms(env["LLMROUTER_AUDIT_HMAC_KEY"].encode())
    else:
        logger.warning("no audit HMAC key: a random one is used by this process")
        pseudonyms = Pseudonyms.random()
    log = Path(path)
    checkpoints = env.get("LLMROUTER_AUDIT_CHECKPOINTS") or str(
        log.with_name(f"{log.stem}-checkpoints{log.suffix or '.jsonl'}")
    )
    return AuditWriter(
        RotatingFile(log), signer, pseudonyms, checkpoint_stores=[CheckpointFile(Path(checkpoints))]
    )


async def start_writer(env: Mapping[str, str]) -> None:
    """Start the writer the environment describes, in the running loop (Kopf's)."""
    writer = open_writer(env)
    if writer is None:
        return
    await writer.start()
    _running.writer, _running.loop = writer, asyncio.get_running_loop()
    logger.info("audit log %s, chain %s", getattr(writer.file, "path", "?"), writer.chain.id)


async def stop_writer() -> None:
    writer, _running.writer = _running.writer, None
    if writer is not None:
        await writer.close()


@kopf.on.startup()
async def _start(**_: Any) -> None:
    try:
        await start_writer(os.environ)
    except (OSError, ValueError) as exc:
        raise kopf.PermanentError(f"audit log: {exc}") from exc


@kopf.on.cleanup()
async def _stop(**_: Any) -> None:
    await stop_writer()


def key_event(what: str, tenant: str, key_name: str, fingerprint: str | None = None) -> None:
    """Record an API key event before it happens; from a handler's thread. Raises
    kopf.TemporaryError when the log cannot be written, so the change waits for it."""
    writer, loop = _running.writer, _running.loop
    if writer is None or loop is None:
        return
    event: dict[str, Any] = {
        "type": f"key.{what}",
        "tenant": tenant,
        "key": writer.pseudonyms.of(f"key:{key_name}"),
    }
    if fingerprint is not None:
        event["fingerprint"] = fingerprint
    future = asyncio.run_coroutine_threadsafe(writer.write(event), loop)
    try:
        future.result(WRITE_TIMEOUT_S)
    except (AuditUnavailable, concurrent.futures.TimeoutError) as exc:
        message = f"audit log not written, key {what} deferred: {exc}"
        raise kopf.TemporaryError(message, delay=10) from None


async def record(event: dict[str, Any]) -> None:
    """Record an event before it takes effect, from Kopf's loop; raises
    kopf.TemporaryError when the log cannot be written."""
    writer = _running.writer
    if writer is None:
        return
    try:
        await writer.write(event)
    except AuditUnavailable as exc:
        raise kopf.TemporaryError(f"audit log not written: {exc}", delay=10) from None


async def experiment_decision(
    experiment: str, previous: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    """A verdict reached or a routing change of an Experiment, before its status says so."""
    before = (previous.get("verdict") or {}).get("decision")
    verdict = new.get("verdict") or {}
    after = verdict.get("decision")
    routed = new.get("routedTo")
    if (after == before or after == "Running") and routed == previous.get("routedTo"):
        return
    await record(
        {
            "type": "experiment.decision",
            "experiment": experiment,
            "decision": after,
            "reason": verdict.get("reason", ""),
            "routed_to": routed,
        }
    )
