"""`llmrouter audit verify` against logs a real writer made, then tampered with the way an
attacker with write access to the log would."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmrouter.gateway.audit.chain import Signer, key_id
from llmrouter.gateway.audit.jcs import canonical
from tests.support.audit_log import write_log
from tests.support.serve import llmrouter

AUDIT = [sys.executable, "-m", "llmrouter.audit_cli"]
"""`llmrouter audit` without the gateway's imports: the matrix runs it a dozen times."""
WRITER = [sys.executable, str(Path(__file__).parent.parent / "support" / "audit_log.py")]

COUNT = 10
"""Records in the log; checkpoints after 4, 8 and (at close) 10."""
K = 5
"""The line tampered with (seq 4)."""


@dataclass
class Log:
    dir: Path
    log: Path
    checkpoints: Path
    public: Path

    def lines(self) -> list[bytes]:
        return self.log.read_bytes().splitlines()

    def write(self, lines: list[bytes]) -> None:
        self.log.write_bytes(b"".join(line + b"\n" for line in lines))

    def verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *AUDIT,
                "verify",
                str(self.log),
                "--checkpoints",
                str(self.checkpoints),
                "--public-key",
                str(self.public),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )


def _keys(directory: Path) -> Path:
    result = subprocess.run(
        llmrouter("audit", "keygen", str(directory / "signing")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return directory / "signing"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
async def log(tmp_path: Path, keys: Path) -> Log:
    signer = Signer.from_pem(keys.with_suffix(".key").read_bytes())
    made = Log(
        tmp_path, tmp_path / "audit.jsonl", tmp_path / "checkpoints.jsonl", keys.with_suffix(".pub")
    )
    await write_log(made.log, made.checkpoints, signer, COUNT)
    assert len(made.lines()) == COUNT
    assert len(made.checkpoints.read_bytes().splitlines()) == 3
    return made


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What an attacker who knows the format does: fix every later prev."""
    out = lines[:start]
    for raw in lines[start:]:
        record = json.loads(raw)
        record["prev"] = hashlib.sha256(out[-1]).hexdigest()
        out.append(canonical(record))
    return out


def _edit(raw: bytes, **changes: object) -> bytes:
    return canonical({**json.loads(raw), **changes})


def _bad(result: subprocess.CompletedProcess[str], line: str, reason: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(line + ":"), first
    assert reason in first, first


def test_an_untouched_log_verifies(log: Log) -> None:
    result = log.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "10 records in 1 chains intact; 3 checkpoints matched" in result.stderr


TAMPERS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], int, str]] = {
    "edit a field": (
        lambda ls: [*ls[: K - 1], _edit(ls[K - 1], tenant="other"), *ls[K:]],
        K,
        "record 4 was altered",
    ),
    "edit the last record": (
        lambda ls: [*ls[:-1], _edit(ls[-1], n=99)],
        9,  # records 8..9 are covered by the last checkpoint alone
        "differ from what checkpoint",
    ),
    "reformat a line": (
        lambda ls: [*ls[: K - 1], ls[K - 1].replace(b",", b", ", 1), *ls[K:]],
        K,
        "not in canonical form",
    ),
    "delete a line": (lambda ls: [*ls[: K - 1], *ls[K:]], K, "record 4 missing"),
    "swap two lines": (
        lambda ls: [*ls[: K - 1], ls[K], ls[K - 1], *ls[K + 1 :]],
        K,
        "records 4 and 5 swapped",
    ),
    "insert a forged line": (
        lambda ls: [
            *ls[:K],
            _edit(ls[K], prev=hashlib.sha256(ls[K - 1]).hexdigest(), tenant="forged"),
            *ls[K:],
        ],
        K + 1,
        "this line was inserted",
    ),
    "insert a forged line with any prev": (
        lambda ls: [*ls[:K], _edit(ls[K], tenant="forged", prev="ab" * 32), *ls[K:]],
        K + 1,
        "this line was inserted",
    ),
    "edit and re-chain everything after": (
        lambda ls: _rechain([*ls[: K - 1], _edit(ls[K - 1], tenant="other"), *ls[K:]], K),
        K,
        "records 4..7 of chain",
    ),
    "delete and re-chain": (
        lambda ls: _rechain(
            [*ls[: K - 1], *[_edit(r, seq=json.loads(r)["seq"] - 1) for r in ls[K:]]], K - 1
        ),
        K,
        "differ from what checkpoint",
    ),
    "truncate the tail": (lambda ls: ls[:-3], 7, "records 7..9 were cut"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampering_fails_at_the_right_line(log: Log, name: str) -> None:
    tamper, line, reason = TAMPERS[name]
    log.write(tamper(log.lines()))
    _bad(log.verify(), f"{log.log}:{line}", reason)


def _checkpoint_lines(log: Log) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in log.checkpoints.read_bytes().splitlines()]


def _write_checkpoints(log: Log, cps: list[dict[str, object]]) -> None:
    log.checkpoints.write_bytes(b"".join(canonical(cp) + b"\n" for cp in cps))


def test_an_altered_checkpoint_fails(log: Log) -> None:
    cps = _checkpoint_lines(log)
    cps[1]["size"] = 7
    _write_checkpoints(log, cps)
    _bad(log.verify(), f"{log.checkpoints}:2", "checkpoint signature is not valid")


def _resign(cp: dict[str, object], key: Ed25519PrivateKey, key_name: str) -> dict[str, object]:
    body = {k: v for k, v in cp.items() if k != "sig"} | {"key": key_name}
    return body | {"sig": base64.b64encode(key.sign(canonical(body))).decode()}


def test_a_checkpoint_re_signed_with_another_key_fails(log: Log) -> None:
    rogue = Ed25519PrivateKey.generate()
    cps = _checkpoint_lines(log)
    # The attacker rewrites the log and signs matching checkpoints with a key of its own.
    log.write(_rechain([*log.lines()[: K - 1], _edit(log.lines()[K - 1], n=0)], K))
    cps[1] = _resign(cps[1], rogue, key_id(rogue.public_key()))
    _write_checkpoints(log, cps)
    _bad(log.verify(), f"{log.checkpoints}:2", "signed by an unknown key")
    known = str(cps[0]["key"])
    cps[1] = _resign(cps[1], rogue, known)  # and claiming the real key's id
    _write_checkpoints(log, cps)
    _bad(log.verify(), f"{log.checkpoints}:2", "checkpoint signature is not valid")


def test_a_torn_last_line_is_not_tampering(log: Log) -> None:
    data = log.log.read_bytes()
    log.log.write_bytes(data + b'{"chain":"abc","seq":')
    result = log.verify()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith(f"{log.log}:11: the last line is incomplete")


def test_two_chains_of_two_processes_verify(tmp_path: Path, keys: Path) -> None:
    log, checkpoints = tmp_path / "audit.jsonl", tmp_path / "checkpoints.jsonl"
    args = [str(log), str(checkpoints), str(keys.with_suffix(".key"))]
    procs = [subprocess.Popen([*WRITER, *args, str(n)]) for n in (30, 20)]
    assert [p.wait(60) for p in procs] == [0, 0]
    files = sorted(str(p) for p in tmp_path.glob("audit.jsonl*"))
    result = subprocess.run(
        llmrouter(
            "audit",
            "verify",
            *files,
            "--checkpoints",
            str(checkpoints),
            "--public-key",
            str(keys.with_suffix(".pub")),
            "--complete",
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 records in 2 chains intact" in result.stderr


async def test_checkpoints_in_redis_catch_a_cut_tail(
    tmp_path: Path, keys: Path, redis_url: str
) -> None:
    signer = Signer.from_pem(keys.with_suffix(".key").read_bytes())
    log = tmp_path / "audit.jsonl"
    # The checkpoint file is lost with the log's volume; Redis kept its copies.
    await write_log(log, tmp_path / "lost.jsonl", signer, COUNT, redis_url=redis_url)
    command = [
        *AUDIT, "verify", str(log), "--checkpoints-redis", redis_url,
        "--public-key", str(keys.with_suffix(".pub")),
    ]  # fmt: skip
    intact = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "3 checkpoints matched" in intact.stderr
    log.write_bytes(b"".join(line + b"\n" for line in log.read_bytes().splitlines()[:-2]))
    cut = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert cut.stdout.startswith(f"{log}:8: ") and "records 8..9 were cut" in cut.stdout
