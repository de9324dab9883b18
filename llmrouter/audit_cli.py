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


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds above zero")
    return value


def add_gateway_args(parser: argparse.ArgumentParser) -> None:
    """The audit flags of ``serve`` and ``gateway``."""
    group = parser.add_argument_group("audit log")
    group.add_argument(
        "--audit-file",
        metavar="PATH",
        help="keep a hash-chained audit log here (rotated; needs --audit-signing-key)",
    )
    group.add_argument(
        "--audit-signing-key",
        metavar="PEM",
        help="Ed25519 key that signs the checkpoints (make one: llmrouter audit keygen)",
    )
    group.add_argument(
        "--audit-checkpoints",
        metavar="FILE",
        help="append signed checkpoints here, ideally a volume the gateway can only append "
        "to (default: <stem>-checkpoints<suffix> beside the log; with --state also Redis)",
    )
    group.add_argument(
        "--audit-hmac-key-file",
        metavar="FILE",
        help="key of the HMACs standing for key names, subjects and addresses (default: "
        "$LLMROUTER_AUDIT_HMAC_KEY, else random per process)",
    )
    group.add_argument(
        "--audit-checkpoint-every",
        type=_count,
        default=1000,
        metavar="N",
        help="sign a checkpoint after at most N records (default: 1000)",
    )
    group.add_argument(
        "--audit-checkpoint-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="and at most this many seconds apart (default: 10)",
    )
    group.add_argument(
        "--audit-stdout", action="store_true", help="copy every audit line to stdout (SIEM)"
    )
    group.add_argument(
        "--audit-rotate-bytes",
        type=_count,
        default=100 * 1024 * 1024,
        metavar="BYTES",
        help="rotate the audit file at this size (default: 100 MiB)",
    )
    group.add_argument(
        "--audit-rotate-age",
        type=_seconds,
        default=86400.0,
        metavar="SECONDS",
        help="rotate the audit file at this age (default: 86400)",
    )
    group.add_argument(
        "--audit-retention-days",
        type=_count,
        default=None,
        metavar="DAYS",
        help="remove rotated audit files older than this (default: keep them)",
    )


def gateway_args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the audit flags, in words, before anything starts."""
    from llmrouter.gateway.audit.chain import Signer
    from llmrouter.gateway.audit.pseudonym import Pseudonyms, read_key

    if not args.audit_file:
        if args.audit_signing_key or args.audit_checkpoints or args.audit_stdout:
            return "the --audit-* flags need --audit-file PATH"
        return None
    if not args.audit_signing_key:
        return (
            "--audit-file needs --audit-signing-key PEM: checkpoints must be signed "
            "(make a key with `llmrouter audit keygen PREFIX`)"
        )
    try:
        Signer.from_pem(Path(args.audit_signing_key).read_bytes())
    except OSError as exc:
        return f"--audit-signing-key {args.audit_signing_key}: {exc.strerror or exc}"
    except (ValueError, TypeError) as exc:
        return f"--audit-signing-key {args.audit_signing_key}: not an Ed25519 PEM key ({exc})"
    if args.audit_hmac_key_file:
        try:
            Pseudonyms(read_key(Path(args.audit_hmac_key_file).read_bytes()))
        except OSError as exc:
            return f"--audit-hmac-key-file {args.audit_hmac_key_file}: {exc.strerror or exc}"
        except ValueError as exc:
            return f"--audit-hmac-key-file {args.audit_hmac_key_file}: {exc}"
    for flag, path in (
        ("--audit-file", args.audit_file),
        ("--audit-checkpoints", args.audit_checkpoints),
    ):
        if path is None:
            continue
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"{flag} {path}: {exc.strerror or exc}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{flag} {path}: its folder is not writable"
    return None


def settings_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The GatewaySettings fields of the audit flags."""
    return {
        "audit_file": args.audit_file,
        "audit_signing_key_file": args.audit_signing_key,
        "audit_checkpoint_file": args.audit_checkpoints,
        "audit_hmac_key_file": args.audit_hmac_key_file,
        "audit_checkpoint_every": args.audit_checkpoint_every,
        "audit_checkpoint_interval_s": args.audit_checkpoint_interval,
        "audit_stdout": args.audit_stdout,
        "audit_rotate_bytes": args.audit_rotate_bytes,
        "audit_rotate_age_s": args.audit_rotate_age,
        "audit_retention_days": args.audit_retention_days,
    }


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
