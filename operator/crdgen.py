"""CustomResourceDefinitions generated from the pydantic models.

The API server validates what ``kubectl apply`` sends with the same rules the compiler
uses, because both come from one model. ``llmrouter crds`` writes the YAML to crds/,
and a test fails when the committed files drift from the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.experiment import ExperimentSpec, ExperimentStatus
from llmrouter.operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from llmrouter.operator.api.slapolicy import SLAPolicySpec, SLAPolicyStatus
from llmrouter.operator.api.tenant import TenantSpec, TenantStatus

# Keywords pydantic emits that a structural CRD schema does not allow or does not need.
_DROPPED_KEYWORDS = {"title", "default", "additionalProperties", "example", "examples"}


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: list[dict[str, Any]] = field(default_factory=list)


KINDS = [
    KindInfo(
        kind="ModelDeployment",
        plural="modeldeployments",
        singular="modeldeployment",
        short_names=["md", "llmmodel"],
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        printer_columns=[
            {"name": "Served", "type": "string", "jsonPath": ".spec.servedName"},
            {"name": "Engine", "type": "string", "jsonPath": ".status.engine"},
            {"name": "Model", "type": "string", "jsonPath": ".status.model"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    KindInfo(
        kind="SLAPolicy",
        plural="slapolicies",
        singular="slapolicy",
        short_names=["sla", "slo"],
        spec=SLAPolicySpec,
        status=SLAPolicyStatus,
        printer_columns=[
            {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"},
            {"name": "Window", "type": "string", "jsonPath": ".spec.window"},
            {"name": "Compliant", "type": "boolean", "jsonPath": ".status.compliant"},
            {"name": "Budget", "type": "string", "jsonPath": ".status.budget"},
            {"name": "Source", "type": "string", "jsonPath": ".status.source"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    KindInfo(
        kind="Tenant",
        plural="tenants",
        singular="tenant",
        short_names=["tn"],
        spec=TenantSpec,
        status=TenantStatus,
        printer_columns=[
            {"name": "Display", "type": "string", "jsonPath": ".spec.displayName"},
            {"name": "Models", "type": "string", "jsonPath": ".spec.models"},
            {"name": "RPM", "type": "integer", "jsonPath": ".spec.limits.requestsPerMinute"},
            {"name": "Budget", "type": "string", "jsonPath": ".spec.budget.monthlyUSD"},
            {"name": "Spent", "type": "string", "jsonPath": ".status.usage.costUSD"},
            {"name": "Keys", "type": "string", "jsonPath": ".status.apiKeys[*].name"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    KindInfo(
        kind="Experiment",
        plural="experiments",
        singular="experiment",
        short_names=["exp"],
        spec=ExperimentSpec,
        status=ExperimentStatus,
        printer_columns=[
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Winner", "type": "string", "jsonPath": ".status.verdict.winner"},
            {"name": "Lift", "type": "string", "jsonPath": ".status.lift"},
            {"name": "P", "type": "string", "jsonPath": ".status.pValue"},
            {"name": "SRM", "type": "boolean", "jsonPath": ".status.srm.detected"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema made structural: refs inlined, nullables folded away."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    cleaned: dict[str, Any] = _clean(raw, defs)
    return cleaned


def _clean(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_clean(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, defs)
    if "anyOf" in node:
        # Optional[X] appears as anyOf [X, null]: the field is optional, not nullable.
        options = [opt for opt in node["anyOf"] if opt.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _clean({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {name: _clean(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _clean(value, defs)
    if node.get("type") == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _clean(extra, defs)
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {"type": "string"}
    return out


def render_crd(info: KindInfo) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(info.spec),
            "status": structural_schema(info.status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": ["llmrouter"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


# Words YAML 1.1 reads as booleans, as kubectl's YAML parser does, though PyYAML writes
# some of them bare: a status field named `n` became `false` there.
_YAML11_BOOLS = frozenset(
    w
    for word in ("y", "yes", "n", "no", "true", "false", "on", "off")
    for w in (word, word.capitalize(), word.upper())
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value in _YAML11_BOOLS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_all() -> dict[str, str]:
    """File name → YAML text for every CRD."""
    header = "# Generated by `llmrouter crds` from the pydantic models. Do not edit.\n"
    return {
        f"{GROUP}_{info.plural}.yaml": header
        + yaml.dump(render_crd(info), Dumper=_Dumper, sort_keys=False, width=100)
        for info in KINDS
    }
