"""The operator's key events: on disk before the key changes, or the change waits."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import kopf
import pytest

from llmrouter.gateway.audit.chain import load_public_key, new_key_pem
from llmrouter.gateway.audit.pseudonym import Pseudonyms
from llmrouter.gateway.audit.verify import verify
from llmrouter.operator import audit


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    private, public = new_key_pem()
    (tmp_path / "signing.key").write_bytes(private)
    (tmp_path / "signing.pub").write_bytes(public)
    return {
        "LLMROUTER_AUDIT_FILE": str(tmp_path / "operator-audit.jsonl"),
        "LLMROUTER_AUDIT_SIGNING_KEY": str(tmp_path / "signing.key"),
        "LLMROUTER_AUDIT_HMAC_KEY": "operator-hmac-key-for-tests-01",
    }


@pytest.fixture
def operator_loop(env: dict[str, str]) -> Iterator[None]:
    """The writer started in an event loop of its own thread, as Kopf runs it, while the
    test calls key_event from this thread, as Kopf's sync handlers do."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(audit.start_writer(env), loop).result(10)
    yield
    asyncio.run_coroutine_threadsafe(audit.stop_writer(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_key_events_are_written_and_verify(operator_loop: None, env: dict[str, str]) -> None:
    audit.key_event("created", "team-a/acme", "ci-bot", "sha256:0123456789abcdef")
    audit.key_event("rotated", "team-a/acme", "ci-bot", "sha256:fedcba9876543210")
    audit.key_event("revoked", "team-a/acme", "old-bot")
    log = Path(env["LLMROUTER_AUDIT_FILE"])
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    hmac = Pseudonyms(env["LLMROUTER_AUDIT_HMAC_KEY"].encode()).of
    assert [(r["type"], r["tenant"], r["key"]) for r in records] == [
        ("key.created", "team-a/acme", hmac("key:ci-bot")),
        ("key.rotated", "team-a/acme", hmac("key:ci-bot")),
        ("key.revoked", "team-a/acme", hmac("key:old-bot")),
    ]
    assert b"ci-bot" not in log.read_bytes()


def test_the_chain_and_its_last_checkpoint_verify(env: dict[str, str], tmp_path: Path) -> None:
    async def run() -> None:
        await audit.start_writer(env)
        await asyncio.to_thread(audit.key_event, "created", "ns/t", "k", "sha256:00")
        await audit.stop_writer()

    asyncio.run(run())
    checkpoints = tmp_path / "operator-audit-checkpoints.jsonl"
    report = verify(
        [Path(env["LLMROUTER_AUDIT_FILE"])],
        [(str(checkpoints), checkpoints.read_bytes().splitlines())],
        [load_public_key((tmp_path / "signing.pub").read_bytes())],
    )
    assert report.exit_code == 0 and report.checkpoints == 1 and report.problems == []


def test_a_key_change_waits_when_the_log_cannot_be_written(operator_loop: None) -> None:
    writer = audit._running.writer
    assert writer is not None

    def disk_full(lines: Sequence[bytes], durable: bool) -> None:
        raise OSError(28, "No space left on device")

    writer.file.write = disk_full  # type: ignore[method-assign]
    with pytest.raises(kopf.TemporaryError, match="No space left"):
        audit.key_event("created", "ns/t", "k", "sha256:00")


def test_misconfiguration_is_told_in_words(env: dict[str, str]) -> None:
    assert audit.open_writer({}) is None
    with pytest.raises(ValueError, match="needs LLMROUTER_AUDIT_SIGNING_KEY"):
        audit.open_writer({"LLMROUTER_AUDIT_FILE": env["LLMROUTER_AUDIT_FILE"]})
    with pytest.raises(ValueError, match="LLMROUTER_AUDIT_SIGNING_KEY /nonexistent"):
        audit.open_writer({**env, "LLMROUTER_AUDIT_SIGNING_KEY": "/nonexistent"})


def test_experiment_decisions_are_recorded_once(env: dict[str, str]) -> None:
    running = {"verdict": {"decision": "Running"}}
    rolled = {"verdict": {"decision": "Rollback", "reason": "latency worse"}, "routedTo": "a"}

    async def run() -> None:
        await audit.start_writer(env)
        await audit.experiment_decision("ns/e", {}, running)  # nothing decided yet
        await audit.experiment_decision("ns/e", running, rolled)
        await audit.experiment_decision("ns/e", rolled, rolled)  # unchanged: no record
        await audit.stop_writer()

    asyncio.run(run())
    records = [
        json.loads(line) for line in Path(env["LLMROUTER_AUDIT_FILE"]).read_bytes().splitlines()
    ]
    assert [(r["type"], r["experiment"], r["decision"], r["routed_to"]) for r in records] == [
        ("experiment.decision", "ns/e", "Rollback", "a")
    ]
