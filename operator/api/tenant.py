"""Tenant: who may use which models, how much, for how much money, with which identities."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, field_validator

from llmrouter.operator.api.common import MODEL_NAME, USD, Resource, SpecModel, schema_extra
from llmrouter.operator.api.status import CommonStatus

Role = Literal["admin", "developer", "analyst", "user"]
KEY_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ALLOWED_MODEL = rf"^(\*|{MODEL_NAME[1:-1]})$"


PositiveLimit = Annotated[int, Field(ge=1, le=10**15)]


class Limits(SpecModel):
    """Admission limits; an absent field means no limit. Windows are calendar-aligned in
    UTC: the minute, the day, the month."""

    requests_per_minute: PositiveLimit | None = Field(
        None, description="Requests admitted per UTC minute; past it, 429 with Retry-After."
    )
    requests_per_day: PositiveLimit | None = Field(
        None, description="Requests admitted per UTC day; past it, 429 with Retry-After."
    )
    tokens_per_minute: PositiveLimit | None = Field(
        None, description="Input and output tokens per UTC minute."
    )
    tokens_per_month: PositiveLimit | None = Field(
        None, description="Input and output tokens per calendar month (UTC)."
    )
    max_concurrent: PositiveLimit | None = Field(
        None, description="Requests in flight at once across all gateway replicas."
    )


class Budget(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "double(self.monthlyUSD) > 0.0",
                    "message": "monthlyUSD must be greater than zero",
                }
            ],
        }
    ),
):
    """Monthly spend in USD (calendar month, UTC), from each model's pricing."""

    monthly_usd: Annotated[USD, Field(alias="monthlyUSD")]
    warn_at_percent: Annotated[int, Field(ge=1, le=100)] = 80
    on_exceeded: Literal["Block", "Alert"] = "Block"

    @field_validator("monthly_usd")
    @classmethod
    def _positive(cls, value: str) -> str:
        if Decimal(value) <= 0:
            raise ValueError("monthlyUSD must be greater than zero")
        return value


class ApiKeySpec(SpecModel):
    """An API key the operator generates and keeps in a Secret of its own."""

    name: Annotated[str, Field(pattern=KEY_NAME)]
    role: Role = "user"
    limits: Limits | None = Field(
        None, description="Limits of this key alone, on top of the tenant's."
    )


class OIDCAuth(SpecModel):
    """Bearer JWTs from an OpenID Connect issuer; group claims map to roles."""

    issuer: Annotated[str, Field(pattern=r"^https?://\S+$")]
    audience: Annotated[str, Field(min_length=1)]
    jwks_url: Annotated[str | None, Field(alias="jwksURL", pattern=r"^https?://\S+$")] = None
    groups_claim: Annotated[str, Field(min_length=1)] = "groups"
    user_claim: Annotated[str, Field(min_length=1)] = "sub"
    roles: dict[str, Role] = Field(
        default_factory=dict, description="Group name → role; users in no group are refused."
    )


class RuleMatch(SpecModel):
    """What a request must carry for a rule to apply; every field given must match."""

    task_type: Annotated[str, Field(min_length=1, max_length=63)] | None = Field(
        None, description="From the x-llmrouter-task-type header or body metadata.task_type."
    )
    model: Annotated[str, Field(pattern=ALLOWED_MODEL)] | None = Field(
        None, description="The name the client asked for (a model or alias)."
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Entries the request's body metadata must have."
    )


class RoutingRule(SpecModel):
    match: RuleMatch
    model: Annotated[str, Field(pattern=MODEL_NAME)] = Field(
        description="The model to call instead; the tenant must be allowed to use it."
    )


class Routing(SpecModel):
    rules: list[RoutingRule] = Field(
        default_factory=list, description="Tried in order; the first that matches wins."
    )


class Auth(SpecModel):
    oidc: OIDCAuth | None = None


class CostCenter(SpecModel):
    department: Annotated[str, Field(max_length=63)] | None = None
    project: Annotated[str, Field(max_length=63)] | None = None


Detector = Literal[
    "email",
    "phone",
    "paymentCard",
    "iban",
    "nationalId",
    "awsAccessKey",
    "privateKey",
    "githubToken",
    "slackToken",
    "stripeKey",
    "openaiKey",
    "anthropicKey",
    "jwt",
    "secrets",
]
GuardAction = Literal["Redact", "Block", "Flag"]
GuardDirection = Literal["Input", "Output", "Both"]


class DetectorRule(SpecModel):
    """A built-in detector. nationalId: US SSN and Spanish DNI/NIE. secrets: every secret
    type (cloud keys, API tokens, private keys, JWTs)."""

    type: Detector
    action: GuardAction = Field(
        "Redact",
        description="Redact replaces the value with [REDACTED:type]; Block refuses the "
        "request (400) or ends the answer (finish_reason content_filter); Flag only counts.",
    )
    direction: GuardDirection = Field(
        "Both", description="Prompts sent to models (Input), answers (Output), or both."
    )


class CustomPattern(SpecModel):
    """A tenant's own pattern, matched by RE2 (linear time: no backreferences or
    look-arounds). Every repeat must be bounded (`{1,20}`, not `+` or `*`): a stream keeps
    back as many characters as the longest match."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    regex: Annotated[str, Field(min_length=1, max_length=1024)]
    max_length: Annotated[int, Field(ge=1, le=1024)] = Field(
        256, description="The longest match the pattern may have; a longer one is refused."
    )
    action: GuardAction = "Redact"
    direction: GuardDirection = "Both"


class DataPolicy(SpecModel):
    """Guardrails on this tenant's prompts and answers."""

    detectors: list[DetectorRule] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    custom_patterns: list[CustomPattern] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    prompt_injection: Literal["Off", "Flag", "Block"] = Field(
        "Flag",
        description="Heuristics on prompts: override phrases, chat-template tokens, invisible "
        "characters. They misfire on some honest prompts, hence Flag (count only) by default.",
    )


class AuditPolicy(SpecModel):
    """What the gateways' audit log keeps of this tenant's requests."""

    prompts: Literal["Off", "Hash", "Redacted"] = Field(
        "Off",
        description="Off: no prompt in the request record. Hash: a keyed HMAC of the prompt "
        "(tells equal prompts apart, reveals none). Redacted: the prompt with everything the "
        "built-in detectors find (addresses, numbers, secrets) replaced. Answers never.",
    )
    retention_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        None,
        description="Days the audit files must keep this tenant's records; rotated files "
        "are removed after the longest such period of all tenants (and the gateway's own).",
    )


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
    limits: Limits = Field(default_factory=Limits)
    budget: Budget | None = None
    auth: Auth = Field(default_factory=Auth)
    routing: Routing = Field(default_factory=Routing)
    cost_center: CostCenter = Field(default_factory=CostCenter)
    state_outage_policy: Literal["FailOpen", "FailClosed"] | None = Field(
        None,
        description="While the gateways' shared state (Redis) is unreachable: FailOpen admits "
        "on each gateway's local limits, FailClosed refuses this tenant's requests with 503. "
        "Default: the gateway's --redis-failure-policy.",
    )
    data_policy: DataPolicy | None = None
    audit: AuditPolicy = Field(default_factory=AuditPolicy)

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


class UsageStatus(SpecModel):
    period: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Annotated[str, Field(alias="costUSD")] = "0"


class TenantStatus(CommonStatus):
    api_keys: list[ApiKeyStatus] = Field(default_factory=list)
    usage: UsageStatus | None = None
    budget_remaining_usd: Annotated[str | None, Field(alias="budgetRemainingUSD")] = None


class Tenant(Resource):
    kind: Literal["Tenant"] = "Tenant"
    spec: TenantSpec
    status: TenantStatus | None = None

    @property
    def tenant_id(self) -> str:
        """How the gateway, metrics and usage records name this tenant."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
