"""Types shared by every resource: metadata, durations, money, the model base class."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "llmrouter.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes names: RFC 1123 subdomain for objects, label-like for model names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
MODEL_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._:/-]{0,126}[A-Za-z0-9])?$"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

USD_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``2s``, ``500ms`` or ``1m30s``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 500ms, 2s, 1m30s or 1h")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _check_duration(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError(f"duration {text!r} must be greater than zero")
    return text


def _check_usd(text: str) -> str:
    Decimal(text)  # the pattern already guarantees it parses
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, json_schema_extra={"example": "2s"}),
    AfterValidator(_check_duration),
]
"""A positive Go-style duration: ``500ms``, ``2s``, ``1m30s``."""

USD = Annotated[str, Field(pattern=USD_PATTERN), AfterValidator(_check_usd)]
"""An amount of US dollars as a decimal string, so no float rounding ever touches money."""

ModelName = Annotated[str, Field(pattern=MODEL_NAME, min_length=1, max_length=128)]


class SpecModel(BaseModel):
    """Base of every spec type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata the control plane reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
    namespace: str = "default"
    creation_timestamp: datetime.datetime | None = Field(None, alias="creationTimestamp")
    """Set by the API server; who claimed a model name first (absent in YAML files)."""
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(BaseModel):
    """A whole custom resource as read from YAML or the API: apiVersion, kind, metadata, spec."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    @property
    def ref(self) -> str:
        """``Kind namespace/name``: how errors and logs name this object."""
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"


def schema_extra(**extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` for CRD-only keywords (CEL rules, printer hints)."""
    return extra
