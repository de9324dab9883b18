"""``llmrouter audit``: verify audit logs, make a checkpoint signing key, compute HMACs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

USAGE_ERROR = 3
"""Exit status when the inputs themselves are unusable (0, 1 and 2 are verdicts)."""


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check audit logs: canonical lines, hash chains, signed checkpoints; exit 0 "
        "intact, 1 tampered, 2 a last line torn by a crash",
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audit log files")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="public key the checkpoints must be signed with (repeatable)",
    )
    verify.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a checkpoint file (repeatable)",
    )
    verify.add_argument(
        "--checkpoints-redis",
        metavar="redis://HOST:PORT/DB",
        help="read the checkpoints the gateways pushed to this Redis (with --state)",
    )
    verify.add_argument(
        "--complete",
        action="store_true",
        help="the files hold every chain the checkpoints name: a checkpointed chain "
        "without records was removed",
    )
    keygen = audit_sub.add_parser(
        "keygen", help="write a new Ed25519 checkpoint signing key (PREFIX.key, PREFIX.pub)"
    )
    keygen.add_argument("prefix", type=Path, metavar="PREFIX")
    hmac_ = audit_sub.add_parser(
        "hmac", help="the keyed HMAC an audit record shows for a value (key:NAME, user:SUB)"
    )
    hmac_.add_argument("values", nargs="+", metavar="VALUE")
    hmac_.add_argument("--key-file", type=Path, required=True, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        return _keygen(args.prefix)
    if args.audit_command == "hmac":
        return _hmac(args)
    return _verify(args)


def _fail(message: str) -> int:
    print(f"llmrouter audit: {message}", file=sys.stderr)
    return USAGE_ERROR


def _verify(args: argparse.Namespace) -> int:
    from llmrouter.gateway.audit.chain import load_public_key
    from llmrouter.gateway.audit.checkpoints import read_redis
    from llmrouter.gateway.audit.verify import verify

    keys = []
    for path in args.public_key:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except (OSError, ValueError) as exc:
            return _fail(f"--public-key {path}: {exc}")
    sources: list[tuple[str, list[bytes]]] = []
    for path in args.checkpoints:
        try:
            sources.append((str(path), path.read_bytes().splitlines()))
        except OSError as exc:
            return _fail(f"--checkpoints {path}: {exc.strerror or exc}")
    if args.checkpoints_redis:
        try:
            lines = asyncio.run(read_redis(args.checkpoints_redis))
        except Exception as exc:
            return _fail(f"--checkpoints-redis: {exc}")
        sources.append((args.checkpoints_redis, lines))
    if sources and not keys:
        return _fail("checkpoints need --public-key to check their signatures")
    for path in args.files:
        if not path.is_file():
            return _fail(f"{path}: not a file")
    report = verify(args.files, sources, keys, complete=args.complete)
    for problem in report.problems:
        print(problem)
    records = sum(report.chains.values())
    print(
        f"{records} records in {len(report.chains)} chains intact; "
        f"{report.checkpoints} checkpoints matched"
        + (f"; {sum(report.dropped.values())} request records dropped" if report.dropped else ""),
        file=sys.stderr,
    )
    if not sources:
        print("no checkpoints given: a cut tail cannot be detected", file=sys.stderr)
    return report.exit_code


def _keygen(prefix: Path) -> int:
    from llmrouter.gateway.audit.chain import new_key_pem

    private, public = new_key_pem()
    key, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail(f"{key}: {exc.strerror or exc}")
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub.write_bytes(public)
    print(f"signing key: {key}\npublic key:  {pub}")
    return 0


def _hmac(args: argparse.Namespace) -> int:
    from llmrouter.gateway.audit.pseudonym import Pseudonyms, read_key

    try:
        pseudonyms = Pseudonyms(read_key(args.key_file.read_bytes()))
    except (OSError, ValueError) as exc:
        return _fail(f"--key-file {args.key_file}: {exc}")
    for value in args.values:
        print(f"{value}\t{pseudonyms.of(value)}")
    return 0


def main() -> int:
    """``python -m llmrouter.audit_cli``: the same commands as ``llmrouter audit``, without
    loading the gateway (scripts verifying many logs start in a fraction of the time)."""
    parser = argparse.ArgumentParser(prog="llmrouter audit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["audit", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
