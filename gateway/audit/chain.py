"""One process's chain of audit records and the checkpoints that sign it.

A record is a JSON object with ``chain`` (random per process), ``seq`` (from 0) and
``prev`` (hex SHA-256 of the canonical bytes of record ``seq - 1``; 64 zeros for seq 0);
its line in the log is exactly its RFC 8785 bytes. A checkpoint signs, with Ed25519, the
Merkle root of the first ``size`` records of a chain: a chain alone shows an edit, but not
that its tail was cut; the signed size does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from llmrouter.gateway.audit.jcs import canonical
from llmrouter.gateway.audit.merkle import MerkleTree

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"


def timestamp(seconds: float) -> str:
    """UTC with milliseconds, as text: records carry no floats, whose text varies."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def record_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass
class Chain:
    id: str = field(default_factory=lambda: os.urandom(8).hex())
    seq: int = 0
    prev: str = GENESIS
    tree: MerkleTree = field(default_factory=MerkleTree)

    def seal(self, record: dict[str, Any]) -> bytes:
        """The record's line, linked to the one before it."""
        line = canonical({**record, "chain": self.id, "seq": self.seq, "prev": self.prev})
        self.prev = record_hash(line)
        self.seq += 1
        self.tree.append(line)
        return line

    def mark(self) -> tuple[int, str, MerkleTree]:
        return self.seq, self.prev, self.tree.copy()

    def rewind(self, mark: tuple[int, str, MerkleTree]) -> None:
        """Back to ``mark``: records sealed since never reached the log."""
        self.seq, self.prev, self.tree = mark


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.key_id = key_id(private.public_key())

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key)

    def checkpoint(self, chain: Chain, dropped: int, now: float | None = None) -> bytes:
        body: dict[str, Any] = {
            "type": CHECKPOINT,
            "chain": chain.id,
            "size": chain.seq,
            "root": chain.tree.root().hex(),
            "last": chain.prev,
            "time": timestamp(time.time() if now is None else now),
            "dropped": dropped,
            "key": self.key_id,
        }
        signature = self._private.sign(canonical(body))
        body["sig"] = base64.b64encode(signature).decode()
        return canonical(body)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def signature_ok(checkpoint: dict[str, Any], public: Ed25519PublicKey) -> bool:
    body = {name: value for name, value in checkpoint.items() if name != "sig"}
    try:
        public.verify(
            base64.b64decode(str(checkpoint.get("sig", "")), validate=True), canonical(body)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def new_key_pem() -> tuple[bytes, bytes]:
    """A fresh signing key and its public key, both PEM."""
    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
