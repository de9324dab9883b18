"""The audit log's building blocks: RFC 8785, RFC 6962 hashing, HMACs, the writer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import random
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmrouter.gateway.audit.chain import Chain, Signer, signature_ok
from llmrouter.gateway.audit.jcs import NotCanonicalizable, canonical, number
from llmrouter.gateway.audit.merkle import EMPTY_ROOT, MerkleTree, root_of
from llmrouter.gateway.audit.pseudonym import Pseudonyms
from llmrouter.gateway.audit.sinks import Copy, RotatingFile
from llmrouter.gateway.audit.verify import verify
from llmrouter.gateway.audit.writer import AuditUnavailable, AuditWriter

# RFC 8785 appendix B: IEEE 754 bit patterns and their canonical text.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), RFC8785_NUMBERS)
def test_numbers_as_rfc8785_appendix_b(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert number(value) == text


def test_rfc8785_section_3_2_2_example() -> None:
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical(value) == expected.encode()


def test_members_sorted_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+E000... no:
    # 0xD83D < 0xE000, so the emoji comes first, unlike code point order.
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3, "\u00e9": 4}
    assert canonical(value) == '{"a":3,"é":4,"😀":2,"\ue000":1}'.encode()
    assert sorted(value) != ["a", "\u00e9", "\U0001f600", "\ue000"]


def test_what_has_no_canonical_form_is_refused() -> None:
    for bad in (math.nan, math.inf, 2**53, {1: 2}, "\ud800", b"x"):
        with pytest.raises(NotCanonicalizable):
            canonical(bad)


def test_canonical_is_valid_json_that_reads_back_the_same() -> None:
    rng = random.Random(7)
    for _ in range(200):
        value = {
            "".join(chr(rng.choice([0x41, 0x7F, 0xE9, 0x1F600, 0x0A, 0x22])) for _ in range(3)): [
                rng.uniform(-1e6, 1e6),
                rng.randint(-(2**40), 2**40),
                "x\u2028\x01",
            ]
            for _ in range(3)
        }
        assert json.loads(canonical(value)) == value


def test_merkle_roots_match_rfc6962_definition() -> None:
    records = [f"record {i}".encode() for i in range(70)]
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for n, record in enumerate(records, 1):
        tree.append(record)
        assert tree.root() == root_of(records[:n]), n
    # Two leaves by hand: H(0x01 ‖ H(0x00 ‖ a) ‖ H(0x00 ‖ b)).
    a, b = hashlib.sha256(b"\x00a").digest(), hashlib.sha256(b"\x00b").digest()
    assert root_of([b"a", b"b"]) == hashlib.sha256(b"\x01" + a + b).digest()


def test_checkpoint_signature_covers_every_field() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    public = signer._private.public_key()
    chain = Chain()
    chain.seal({"type": "x"})
    cp = json.loads(signer.checkpoint(chain, dropped=0, now=0))
    assert signature_ok(cp, public)
    for name, value in [("size", 2), ("root", "00" * 32), ("dropped", 5), ("chain", "x")]:
        assert not signature_ok({**cp, name: value}, public), name
    assert not signature_ok(cp, Ed25519PrivateKey.generate().public_key())


def test_hmacs_are_keyed_and_stable() -> None:
    a, b = Pseudonyms(b"k" * 32), Pseudonyms(b"j" * 32)
    assert a.of("key:dev") == a.of("key:dev") != b.of("key:dev")
    assert "dev" not in a.of("key:dev")
    with pytest.raises(ValueError):
        Pseudonyms(b"short")


async def test_writer_drops_past_its_queue_and_says_so_in_the_checkpoint(tmp_path: Path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    cps: list[bytes] = []

    class Store:
        name = "memory"

        async def add(self, line: bytes) -> None:
            cps.append(line)

        async def close(self) -> None:
            pass

    writer = AuditWriter(
        RotatingFile(tmp_path / "audit.jsonl"),
        signer,
        Pseudonyms.random(),
        checkpoint_stores=[Store()],
        max_queue=3,
    )
    await writer.start()
    accepted = [writer.submit({"type": "request", "n": i}) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    await writer.write({"type": "admin"})  # not subject to the queue's bound
    await writer.close()
    assert writer.dropped == 2 and writer.written == 4
    last = json.loads(cps[-1])
    assert last["dropped"] == 2 and last["size"] == 4
    report = verify([tmp_path / "audit.jsonl"], [("memory", cps)], [signer._private.public_key()])
    assert report.exit_code == 0 and report.dropped == {writer.chain.id: 2}


async def test_admin_event_fails_when_the_log_cannot_be_written(tmp_path: Path) -> None:
    class Full(RotatingFile):
        def write(self, lines: Sequence[bytes], durable: bool) -> None:
            if lines:
                raise OSError(28, "No space left on device")

    writer = AuditWriter(
        Full(tmp_path / "a.jsonl"), Signer(Ed25519PrivateKey.generate()), Pseudonyms.random()
    )
    await writer.start()
    with pytest.raises(AuditUnavailable, match="No space"):
        await asyncio.wait_for(writer.write({"type": "admin"}), 5)
    assert writer.chain.seq == 0  # the failed record left no hole in the chain
    await writer.close()


def test_rotation_by_size_and_a_second_process_gets_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = RotatingFile(path, max_bytes=100)
    second = RotatingFile(path)
    assert first.path == path and second.path == tmp_path / "audit.jsonl.1"
    for i in range(5):
        first.write([b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40)], False)
    rotated = [p for p in first.files() if p.name.startswith("audit.jsonl.2")]
    assert len(rotated) >= 2
    assert all(p.read_bytes().endswith(b"\n") for p in first.files() if p != second.path)
    first.close()
    second.close()


def test_the_fast_path_gives_the_general_paths_bytes() -> None:
    from llmrouter.gateway.audit import jcs

    rng = random.Random(11)
    alphabet = ["a", "Z", "\x00", "\x1f", '"', "\\", "\u2028", "é", "\U0001f600", "\ue000"]
    for _ in range(300):
        value = {
            f"k{rng.randint(0, 99)}": rng.choice(
                [
                    "".join(rng.choices(alphabet, k=5)),
                    rng.randint(-(2**53) + 1, 2**53 - 1),
                    None,
                    True,
                    ["x", rng.randint(0, 9), {"nested": "é\n"}],
                ]
            )
            for _ in range(8)
        }
        general: list[bytes] = []
        jcs._write(value, general)
        assert jcs._plain(value)
        assert canonical(value) == b"".join(general)


def test_rotation_by_age_and_retention(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "audit.jsonl"
    sink = RotatingFile(path, max_age_s=60, retention_s=3600, clock=lambda: now[0])
    sink.write([b'{"n":1}'], False)
    now[0] += 61  # older than max_age: the next write goes to a new file
    sink.write([b'{"n":2}'], False)
    rotated = [p for p in sink.files() if p != path]
    assert len(rotated) == 1 and rotated[0].read_bytes() == b'{"n":1}\n'
    assert path.read_bytes() == b'{"n":2}\n'
    # An hour later, rotated files (written minutes ago, by their time on disk) are gone.
    now[0] = time.time() + 3601 + 61
    sink.write([b'{"n":3}'], False)
    assert sink.files() == [path] and path.read_bytes() == b'{"n":3}\n'
    assert not rotated[0].exists()
    sink.close()


async def test_stdout_copy_gets_every_line(tmp_path: Path) -> None:
    copy = io.BytesIO()
    writer = AuditWriter(
        RotatingFile(tmp_path / "audit.jsonl"),
        Signer(Ed25519PrivateKey.generate()),
        Pseudonyms.random(),
        copies=[Copy(copy)],
    )
    await writer.start()
    for n in range(3):
        writer.submit({"type": "request", "n": n})
    await writer.write({"type": "admin"})
    await writer.close()
    assert copy.getvalue() == (tmp_path / "audit.jsonl").read_bytes()
    assert copy.getvalue().count(b"\n") == 4
