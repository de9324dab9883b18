"""``llmrouter slo`` and ``llmrouter dashboards``: SLAPolicy rule files and Grafana
dashboards for a Prometheus and a Grafana the operator does not manage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmrouter.operator import yamlutil
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.manifests import manifest_files
from llmrouter.operator.slo import describe_errors


class PolicyError(ValueError):
    """SLAPolicy documents that cannot be read; each message names the file and document."""


def load_policies(paths: Iterable[Path]) -> list[SLAPolicy]:
    """The SLAPolicy documents in YAML files (directories one level deep); other kinds are
    skipped, since the same files usually hold the Tenants and models too."""
    policies: list[SLAPolicy] = []
    errors: list[str] = []
    for path in manifest_files(paths):
        try:
            docs = list(yamlutil.load_all(path.read_text()))
        except OSError as exc:
            errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        except yaml.YAMLError as exc:
            errors.append(f"{path}: not valid YAML: {exc}")
            continue
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("kind") != "SLAPolicy":
                continue
            try:
                policies.append(SLAPolicy.model_validate(doc))
            except ValidationError as exc:
                errors.append(f"{path} (document {index + 1}): {describe_errors(exc)}")
    if errors:
        raise PolicyError("\n".join(errors))
    return policies


def add_parser(sub: Any) -> None:
    slo = sub.add_parser("slo", help="SLAPolicy tools")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True)
    rules = slo_sub.add_parser(
        "rules", help="print the Prometheus rule file of the SLAPolicy documents in FILEs"
    )
    rules.add_argument(
        "-f",
        "--file",
        dest="files",
        type=Path,
        action="append",
        required=True,
        help="a YAML file or folder (repeatable); documents of other kinds are skipped",
    )
    dashboards = sub.add_parser("dashboards", help="write the Grafana dashboards as JSON")
    dashboards.add_argument("--out", type=Path, required=True, metavar="DIR")
    dashboards.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the files differ from what this version generates instead of writing",
    )


def run(args: argparse.Namespace) -> int:
    if args.command == "dashboards":
        return _dashboards(args)
    return _rules(args)


def _dashboards(args: argparse.Namespace) -> int:
    from llmrouter.operator.dashboards import render_all

    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"llmrouter: out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def _rules(args: argparse.Namespace) -> int:
    from llmrouter.operator.slo import dump, rule_file, warnings

    try:
        policies = load_policies(args.files)
    except PolicyError as exc:
        print(f"llmrouter: the SLAPolicy documents do not load:\n{exc}", file=sys.stderr)
        return 1
    if not policies:
        print("llmrouter: no SLAPolicy document in the files given", file=sys.stderr)
        return 1
    for policy in policies:
        for warning in warnings(policy):
            print(f"llmrouter: warning: {policy.ref}: {warning}", file=sys.stderr)
    sys.stdout.write(dump(rule_file(policies)))
    return 0
