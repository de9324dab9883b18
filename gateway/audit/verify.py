"""Check audit logs: canonical form, chains, and the signed checkpoints.

Each file is read line by line. Records are grouped by chain; within a file the lines of a
chain must follow one another, and a chain's runs in several files (rotation) are put in
order of their first ``seq``. The first problem of each chain is reported where it is:
the line whose ``seq`` is wrong (deleted, swapped, inserted records), the line whose hash
the next record does not carry (an edited record), the checkpoint whose root or size the
log does not match (a rewritten chain, a cut tail), the checkpoint whose signature fails.
A last line without its newline is a write torn by a crash: reported, but not tampering.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from llmrouter.gateway.audit.chain import (
    CHECKPOINT,
    GENESIS,
    key_id,
    record_hash,
    signature_ok,
)
from llmrouter.gateway.audit.jcs import NotCanonicalizable, canonical
from llmrouter.gateway.audit.merkle import MerkleTree

TAMPERED = "tampered"
TORN = "torn"


@dataclass(frozen=True)
class Problem:
    where: str
    """``FILE:LINE``."""
    reason: str
    kind: str = TAMPERED

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    chains: dict[str, int] = field(default_factory=dict)
    """Records verified per chain."""
    checkpoints: int = 0
    """Checkpoints whose signature, size and root were checked against a log."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Request records each chain's last checkpoint says were dropped."""

    @property
    def exit_code(self) -> int:
        if any(p.kind == TAMPERED for p in self.problems):
            return 1
        return 2 if self.problems else 0


@dataclass(frozen=True)
class _Line:
    where: str
    raw: bytes
    obj: dict[str, Any]


@dataclass(frozen=True)
class _Checkpoint:
    where: str
    obj: dict[str, Any]


def _parse(raw: bytes, where: str) -> tuple[dict[str, Any] | None, Problem | None]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, Problem(where, "not JSON")
    if not isinstance(obj, dict):
        return None, Problem(where, "not a JSON object")
    try:
        if canonical(obj) != raw:
            return None, Problem(where, "not in canonical form (RFC 8785): the line was edited")
    except NotCanonicalizable as exc:
        return None, Problem(where, f"not canonical JSON: {exc}")
    return obj, None


def _read_lines(path: Path) -> Iterable[tuple[int, bytes, bool]]:
    """(line number, bytes, complete) of each line."""
    data = path.read_bytes()
    if not data:
        return
    lines = data.split(b"\n")
    last = lines.pop()
    for number, raw in enumerate(lines, 1):
        yield number, raw, True
    if last:
        yield len(lines) + 1, last, False


def _segments(paths: Iterable[Path], report: Report) -> dict[str, list[list[_Line]]]:
    """Per chain, its runs of consecutive lines, each run within one file."""
    chains: dict[str, list[list[_Line]]] = {}
    for path in paths:
        current: dict[str, list[_Line]] = {}
        for number, raw, complete in _read_lines(path):
            where = f"{path}:{number}"
            if not complete:
                report.problems.append(
                    Problem(where, "the last line is incomplete: a write torn by a crash", TORN)
                )
                continue
            obj, problem = _parse(raw, where)
            if problem is not None:
                report.problems.append(problem)
                continue
            assert obj is not None
            chain, seq, prev = obj.get("chain"), obj.get("seq"), obj.get("prev")
            if not isinstance(chain, str) or not isinstance(seq, int) or not isinstance(prev, str):
                report.problems.append(Problem(where, "not an audit record (chain, seq, prev)"))
                continue
            if chain not in current:
                current[chain] = []
                chains.setdefault(chain, []).append(current[chain])
            current[chain].append(_Line(where, raw, obj))
    return chains


def read_checkpoints(
    sources: Iterable[tuple[str, list[bytes]]], report: Report
) -> list[_Checkpoint]:
    found = []
    for name, lines in sources:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{name}:{number}"
            obj, problem = _parse(raw, where)
            if problem is not None:
                report.problems.append(problem)
                continue
            assert obj is not None
            if obj.get("type") != CHECKPOINT or not isinstance(obj.get("chain"), str):
                report.problems.append(Problem(where, "not a checkpoint"))
                continue
            found.append(_Checkpoint(where, obj))
    return found


def verify(
    logs: Iterable[Path],
    checkpoints: Iterable[tuple[str, list[bytes]]],
    public_keys: Iterable[Ed25519PublicKey],
    *,
    complete: bool = False,
) -> Report:
    """``checkpoints``: (name, lines) of each source. ``complete``: the logs hold every
    chain the checkpoints name, so a checkpointed chain with no records was removed."""
    report = Report()
    keys = {key_id(k): k for k in public_keys}
    chains = _segments(logs, report)
    by_chain: dict[str, list[_Checkpoint]] = {}
    for cp in read_checkpoints(checkpoints, report):
        key = keys.get(str(cp.obj.get("key")))
        if key is None:
            report.problems.append(
                Problem(cp.where, f"checkpoint signed by an unknown key {cp.obj.get('key')!r}")
            )
        elif not signature_ok(cp.obj, key):
            report.problems.append(Problem(cp.where, "checkpoint signature is not valid"))
        else:
            by_chain.setdefault(cp.obj["chain"], []).append(cp)
    for chain, segments in chains.items():
        _check_chain(chain, segments, by_chain.get(chain, []), report)
    if complete:
        for chain, cps in by_chain.items():
            if chain not in chains:
                report.problems.append(
                    Problem(cps[0].where, f"chain {chain} is checkpointed but has no records")
                )
    return report


def _check_chain(
    chain: str, segments: list[list[_Line]], cps: list[_Checkpoint], report: Report
) -> None:
    segments.sort(key=lambda s: int(s[0].obj["seq"]))
    records = [line for segment in segments for line in segment]
    due: dict[int, list[_Checkpoint]] = {}
    for cp in cps:
        size = cp.obj.get("size")
        if isinstance(size, int):
            due.setdefault(size, []).append(cp)
    tree = MerkleTree()
    prev_hash, prev_line = GENESIS, None
    verified_to = 0  # records covered by a checkpoint that matched
    for index, line in enumerate(records):
        seq = line.obj["seq"]
        if seq != index or line.obj["prev"] != prev_hash:
            following = records[index + 1] if index + 1 < len(records) else None
            report.problems.append(_link_problem(records, index, prev_hash, prev_line, following))
            return
        prev_hash, prev_line = record_hash(line.raw), line
        tree.append(line.raw)
        for cp in due.pop(tree.size, []):
            if cp.obj.get("root") != tree.root().hex() or cp.obj.get("last") != prev_hash:
                first = records[verified_to].where
                report.problems.append(
                    Problem(
                        first,
                        f"records {verified_to}..{tree.size - 1} of chain {chain} (from here to "
                        f"{line.where}) differ from what checkpoint {cp.where} signed",
                    )
                )
                return
            report.checkpoints += 1
            verified_to = tree.size
            report.dropped[chain] = int(cp.obj.get("dropped", 0))
    report.chains[chain] = tree.size
    if due:
        size = max(due)
        cp = due[size][0]
        where = records[-1].where if records else cp.where
        report.problems.append(
            Problem(
                where,
                f"the log of chain {chain} ends at record {tree.size - 1}, but checkpoint "
                f"{cp.where} (signed {cp.obj.get('time')}) covers {size} records: "
                f"records {tree.size}..{size - 1} were cut",
            )
        )


def _link_problem(
    records: list[_Line],
    index: int,
    prev_hash: str,
    prev_line: _Line | None,
    following: _Line | None,
) -> Problem:
    """Why record ``index`` does not continue the chain, told at the line to blame."""
    line = records[index]
    seq = line.obj["seq"]
    if following is not None and following.obj["seq"] == index:
        if line.obj["prev"] == record_hash(following.raw):
            return Problem(line.where, f"records {index} and {seq} swapped ({following.where})")
        if following.obj["prev"] == prev_hash:
            return Problem(line.where, "this line was inserted: the next line continues the chain")
    if seq > index:
        if any(r.obj["seq"] == index for r in records[index + 1 :]):
            return Problem(line.where, f"seq {seq} where {index} was due: records out of order")
        missing = f"record {index}" if seq == index + 1 else f"records {index}..{seq - 1}"
        return Problem(line.where, f"{missing} missing before this line (seq {seq}): removed")
    if seq < index:
        if prev_line is not None and seq == index - 1 and line.obj["prev"] == prev_line.obj["prev"]:
            return Problem(
                prev_line.where,
                f"this line was inserted: {line.where} has the same seq {seq} and continues "
                "the chain",
            )
        return Problem(line.where, f"seq {seq} where {index} was due: records out of order")
    if prev_line is None:
        return Problem(line.where, "the first record's prev is not zeros")
    return Problem(
        prev_line.where,
        f"record {seq - 1} was altered: its hash is not the prev of record {seq} ({line.where})",
    )
