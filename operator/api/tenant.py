"""Tenant: who may use which models, with which API keys and roles."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from llmrouter.operator.api.common import MODEL_NAME, Resource, SpecModel
from llmrouter.operator.api.status import CommonStatus

Role = Literal["admin", "developer", "analyst", "user"]
KEY_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ALLOWED_MODEL = rf"^(\*|{MODEL_NAME[1:-1]})$"


class ApiKeySpec(SpecModel):
    """An API key the operator generates and keeps in a Secret of its own."""

    name: Annotated[str, Field(pattern=KEY_NAME)]
    role: Role = "user"


class CostCenter(SpecModel):
    department: Annotated[str, Field(max_length=63)] | None = None
    project: Annotated[str, Field(max_length=63)] | None = None


class TenantSpec(SpecModel):
    display_name: Annotated[str, Field(max_length=256)] | None = None
    models: list[Annotated[str, Field(pattern=ALLOWED_MODEL)]] = Field(
        min_length=1,
        description="Model names or aliases this tenant may call; `*` allows every model.",
    )
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    cost_center: CostCenter = Field(default_factory=CostCenter)

    @field_validator("api_keys")
    @classmethod
    def _unique_key_names(cls, keys: list[ApiKeySpec]) -> list[ApiKeySpec]:
        seen: set[str] = set()
        for key in keys:
            if key.name in seen:
                raise ValueError(f"apiKeys: name {key.name!r} appears more than once")
            seen.add(key.name)
        return keys


class ApiKeyStatus(SpecModel):
    name: str
    secret_name: str
    fingerprint: str
    created_at: str | None = None


class TenantStatus(CommonStatus):
    api_keys: list[ApiKeyStatus] = Field(default_factory=list)


class Tenant(Resource):
    kind: Literal["Tenant"] = "Tenant"
    spec: TenantSpec
    status: TenantStatus | None = None

    @property
    def tenant_id(self) -> str:
        """How the gateway, metrics and usage records name this tenant."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
