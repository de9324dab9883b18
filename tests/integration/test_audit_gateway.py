"""The gateway's audit log as a user runs it: `llmrouter serve --audit-file`, real requests,
then `llmrouter audit verify` on what it wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import openai
import pytest

from llmrouter.cli import main
from llmrouter.gateway.app import create_app
from llmrouter.gateway.audit.pseudonym import Pseudonyms
from llmrouter.gateway.credentials import EnvCredentials
from llmrouter.gateway.keys import AUDIT
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.config import ANALYST_KEY, DEV_KEY, OTHER_TENANT_KEY, PROVIDER_TOKEN
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import wait_until
from tests.support.serve import ServeProcess, llmrouter, serving

SECRET_PROMPT = "the launch code is swordfish-4412"
HMAC_KEY = b"audit-hmac-key-for-the-tests-0001"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(llmrouter(*args), capture_output=True, text=True, timeout=60)


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    """`llmrouter audit` without loading the gateway: the same commands, quicker."""
    command = [sys.executable, "-m", "llmrouter.audit_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_serve_writes_an_audit_log_that_verifies(
    config_files: tuple[Path, Path], upstream: FakeUpstream, tmp_path: Path
) -> None:
    resources, keys = config_files
    keygen = _audit("keygen", str(tmp_path / "signing"))
    assert keygen.returncode == 0, keygen.stderr
    (tmp_path / "hmac.key").write_bytes(HMAC_KEY + b"\n")
    log = tmp_path / "audit" / "audit.jsonl"
    args = [
        "-f", str(resources), "--keys-file", str(keys), "--endpoint", f"local={upstream.url}",
        "--audit-file", str(log),
        "--audit-signing-key", str(tmp_path / "signing.key"),
        "--audit-hmac-key-file", str(tmp_path / "hmac.key"),
        "--audit-checkpoint-every", "2",
    ]  # fmt: skip
    env = {"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN}
    with ServeProcess(args, tmp_path / "serve.log", env) as proc:
        chat = proc.client(DEV_KEY).chat.completions
        for stream in (False, True):
            answer = chat.create(
                model="chat",
                messages=[{"role": "user", "content": SECRET_PROMPT}],
                stream=stream,
            )
            if stream:
                list(answer)
        with pytest.raises(openai.AuthenticationError):
            proc.client("llmr_not_a_key_at_all_00000000000").models.list()
        with pytest.raises(openai.PermissionDeniedError):
            proc.client(ANALYST_KEY).chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "x"}]
            )
        usage = httpx.get(f"{proc.url}/admin/usage", headers={"x-api-key": DEV_KEY}, timeout=10)
        assert usage.status_code == 200
        # A changed file is a new configuration in force: recorded with its fingerprint.
        tenants = resources / "tenants.yaml"
        tenants.write_text(tenants.read_text().replace("[chat, provider]", "[chat]"))
        wait_until(lambda: log.read_bytes().count(b'"config.applied"') == 2, 15, "a reload")
    # Stopped with SIGTERM: the writer drained and signed a last checkpoint.
    checkpoints = tmp_path / "audit" / "audit-checkpoints.jsonl"
    verify = _run(
        "audit", "verify", str(log), "--checkpoints", str(checkpoints),
        "--public-key", str(tmp_path / "signing.pub"),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert f"{len(records)} records in 1 chains intact" in verify.stderr
    by_type: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_type.setdefault(str(record["type"]), []).append(record)
    assert set(by_type) == {
        "config.applied", "request", "auth.failure", "permission.denied", "admin.call",
    }  # fmt: skip
    dev = Pseudonyms(HMAC_KEY).of("key:dev")
    requests = by_type["request"]
    assert [(r["tenant"], r["user"], r["model"], r["status"], r["stream"]) for r in requests] == [
        ("default/acme", dev, "local", 200, False),
        ("default/acme", dev, "local", 200, True),
    ]
    assert all(int(str(r["input_tokens"])) > 0 and r["cost_usd"] != "0" for r in requests)
    first, second = (r["fingerprint"] for r in by_type["config.applied"])
    assert first != second
    assert by_type["auth.failure"][0]["code"] == "invalid_api_key"
    denied = by_type["permission.denied"][0]
    assert denied["user"] == Pseudonyms(HMAC_KEY).of("key:reader")
    admin = by_type["admin.call"][0]
    assert (admin["path"], admin["status"], admin["user"]) == ("/admin/usage", 200, dev)
    # `llmrouter audit hmac` finds a key's records the same way.
    found = _audit("hmac", "--key-file", str(tmp_path / "hmac.key"), "key:dev")
    assert found.stdout.split() == ["key:dev", dev]
    # Never a key, a prompt or a key name in the clear, in the log or its checkpoints.
    written = log.read_bytes() + checkpoints.read_bytes()
    for secret in (DEV_KEY, ANALYST_KEY, OTHER_TENANT_KEY, "llmr_not_a_key", SECRET_PROMPT,
                   "swordfish", '"dev"', "reader", PROVIDER_TOKEN):  # fmt: skip
        assert secret.encode() not in written, secret


def test_serve_refuses_audit_flags_that_cannot_work(
    config_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resources, keys = config_files
    base = ["serve", "-f", str(resources), "--keys-file", str(keys)]
    log = str(tmp_path / "audit.jsonl")
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    (tmp_path / "short").write_text("abc\n")
    cases = {
        "needs --audit-signing-key": ["--audit-file", log],
        "not an Ed25519 PEM key": [
            "--audit-file", log, "--audit-signing-key", str(tmp_path / "not-a-key.pem"),
        ],
        "No such file": [
            "--audit-file", log, "--audit-signing-key", str(tmp_path / "missing.pem"),
        ],
        "need --audit-file": ["--audit-stdout"],
        "must be a whole number": ["--audit-checkpoint-every", "0"],
    }  # fmt: skip
    for expected, flags in cases.items():
        # In this process: the flags are refused before anything starts.
        try:
            status = main([*base, *flags])
        except SystemExit as exc:  # argparse's own refusals
            status = int(str(exc.code))
        stderr = capsys.readouterr().err
        assert status == 2, (flags, stderr)
        assert expected in stderr, (flags, stderr)


async def test_admin_calls_fail_when_the_audit_log_cannot_be_written(
    source: StandaloneSource, tmp_path: Path
) -> None:
    _audit("keygen", str(tmp_path / "signing"))
    settings = GatewaySettings(
        audit_file=str(tmp_path / "audit.jsonl"),
        audit_signing_key_file=str(tmp_path / "signing.key"),
    )
    credentials = EnvCredentials({"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN})
    app = create_app(settings, ConfigStore(source.load()), credentials)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        headers = {"x-api-key": DEV_KEY}
        assert (await client.get("/admin/usage", headers=headers)).status_code == 200
        writer = app[AUDIT]

        def disk_full(lines: Sequence[bytes], durable: bool) -> None:
            raise OSError(28, "No space left on device")

        writer.file.write = disk_full  # type: ignore[method-assign]
        refused = await client.get("/admin/usage", headers=headers)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "audit_unavailable"
        # A model request is still served; its record is counted as dropped.
        chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        answer = await client.post("/v1/chat/completions", json=chat, headers=headers)
        assert answer.status_code == 200
        for _ in range(100):
            if writer.dropped:
                break
            await asyncio.sleep(0.02)
        assert writer.dropped == 1


def test_two_workers_write_two_chains_checkpointed_in_redis(
    config_files: tuple[Path, Path], upstream: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    resources, keys = config_files
    assert _audit("keygen", str(tmp_path / "signing")).returncode == 0
    log = tmp_path / "audit.jsonl"
    args = [
        "-f", str(resources), "--keys-file", str(keys), "--endpoint", f"local={upstream.url}",
        "--workers", "2", "--state", redis_url,
        "--audit-file", str(log), "--audit-signing-key", str(tmp_path / "signing.key"),
    ]  # fmt: skip
    env = {"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN}
    with ServeProcess(args, tmp_path / "serve.log", env) as proc:
        chat = proc.client(DEV_KEY).chat.completions
        # Each worker writes its own file and chain (its configuration record at least).
        for _ in range(20):
            chat.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1"]
    # The checkpoint file beside the log is lost: Redis's copies alone prove the tails.
    (tmp_path / "audit-checkpoints.jsonl").unlink()
    verify = _audit(
        "verify", *map(str, files), "--checkpoints-redis", redis_url,
        "--public-key", str(tmp_path / "signing.pub"),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert " in 2 chains intact" in verify.stderr
    requests = [
        line for f in files for line in f.read_bytes().splitlines() if b'"type":"request"' in line
    ]
    assert len(requests) == 20
