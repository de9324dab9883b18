"""Reading custom resources from YAML manifests: the files a user would `kubectl apply`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmrouter.operator import yamlutil
from llmrouter.operator.api.common import API_VERSION, GROUP
from llmrouter.operator.api.experiment import Experiment
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.api.tenant import Tenant

logger = logging.getLogger(__name__)

KINDS: dict[str, type[Tenant] | type[ModelDeployment] | type[Experiment] | type[SLAPolicy]] = {
    "Tenant": Tenant,
    "ModelDeployment": ModelDeployment,
    "Experiment": Experiment,
    "SLAPolicy": SLAPolicy,
}
# Kinds of the API group that later versions of this gateway act on; skipped, with a warning.
NOT_YET_SUPPORTED: set[str] = set()


class ManifestError(ValueError):
    """Manifests that cannot be read; every message names the file and the object."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


@dataclass
class Manifests:
    tenants: list[Tenant] = field(default_factory=list)
    models: list[ModelDeployment] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)
    slapolicies: list[SLAPolicy] = field(default_factory=list)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, directories expanded one level deep like `kubectl apply -f`."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
            )
        else:
            files.append(path)
    return files


def load_manifests(paths: Iterable[Path]) -> Manifests:
    out = Manifests()
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
            if doc is None:
                continue
            where = f"{path} (document {index + 1})"
            errors += _add_document(doc, where, out)
    if errors:
        raise ManifestError(errors)
    return out


def _add_document(doc: Any, where: str, out: Manifests) -> list[str]:
    if not isinstance(doc, dict):
        return [f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}"]
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or not api_version.startswith(f"{GROUP}/"):
        logger.info("%s: skipping %s %s (not an %s resource)", where, api_version, kind, GROUP)
        return []
    if api_version != API_VERSION:
        return [f"{where}: apiVersion {api_version!r} is not served; use {API_VERSION!r}"]
    if kind in NOT_YET_SUPPORTED:
        logger.warning("%s: %s is not supported by this version yet; skipped", where, kind)
        return []
    model = KINDS.get(str(kind))
    if model is None:
        return [f"{where}: unknown kind {kind!r} in {GROUP}; expected one of {sorted(KINDS)}"]
    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        name = (doc.get("metadata") or {}).get("name", "?")
        return [
            f"{where}: {kind} {name}: {_field(err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
    if isinstance(obj, Tenant):
        out.tenants.append(obj)
    elif isinstance(obj, Experiment):
        out.experiments.append(obj)
    elif isinstance(obj, SLAPolicy):
        out.slapolicies.append(obj)
    else:
        out.models.append(obj)
    return []


def _field(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")):
            text += f".{part}" if text else part
    return text or "(object)"
