"""GatewayConfig: everything the gateway enforces, compiled from the custom resources.

It is the one contract between control plane and data plane. It is versioned, holds
API key hashes and never keys, and names provider credentials by reference only.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Hashable
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from llmrouter.gateway.slo_config import SLOPolicy

CONFIG_VERSION: Literal[1] = 1

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The output cap of an external model that declares none: what budgets reserve for a
request without max_tokens, and what the gateway then sends upstream."""

Role = Literal["admin", "developer", "analyst", "user"]
Protocol = Literal["openai", "anthropic", "azure-openai"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CredentialRef(_Frozen):
    """A provider credential by reference: a Secret in a cluster, an env var standalone."""

    secret: str
    key: str
    namespace: str = "default"
    """The namespace of the Secret (the ModelDeployment's)."""


class Upstream(_Frozen):
    """One server the gateway can send a model's requests to."""

    base_url: str
    protocol: Protocol = "openai"
    model: str | None = Field(
        None, description="The model name the upstream expects; None sends the served name."
    )
    credential: CredentialRef | None = None
    deployment: str | None = Field(None, description="Azure OpenAI: the deployment name.")
    api_version: str | None = Field(None, description="Azure OpenAI: the api-version.")


class Timeouts(_Frozen):
    connect_s: float
    first_token_s: float
    total_s: float


class Pricing(_Frozen):
    input_per_million_usd: Decimal = Decimal(0)
    output_per_million_usd: Decimal = Decimal(0)

    @functools.cached_property
    def nano_per_million(self) -> tuple[int, int]:
        """Input and output prices in whole nano-dollars per million tokens, rounded up:
        integer arithmetic for the worst case every admission reserves."""
        scale = Decimal(1_000_000_000)
        return (
            int((self.input_per_million_usd * scale).to_integral_value(rounding="ROUND_CEILING")),
            int((self.output_per_million_usd * scale).to_integral_value(rounding="ROUND_CEILING")),
        )


class ModelRoute(_Frozen):
    name: str
    source: str = Field(description="The resource it came from, `ModelDeployment ns/name`.")
    engine: Literal["llamacpp", "external"]
    aliases: tuple[str, ...] = ()
    upstreams: tuple[Upstream, ...]
    pricing: Pricing = Pricing()
    fallbacks: tuple[str, ...] = ()
    timeouts: Timeouts
    slots: int | None = Field(
        None, description="Requests one endpoint runs at once (llama-server --parallel)."
    )
    max_output_tokens: int = Field(
        DEFAULT_MAX_OUTPUT_TOKENS,
        description="Output cap of a request that sets none; also the most it may ask for.",
    )


class Limits(_Frozen):
    """Admission limits; None means no limit."""

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_month: int | None = None
    max_concurrent: int | None = None


class Budget(_Frozen):
    monthly_usd: Decimal
    warn_at_percent: int = 80
    block: bool = True


StateOutagePolicy = Literal["fail-open", "fail-closed"]


class OIDCProvider(_Frozen):
    issuer: str
    audience: str
    jwks_url: str | None = None
    groups_claim: str = "groups"
    user_claim: str = "sub"
    roles: dict[str, Role] = Field(default_factory=dict)


class RoutingRule(_Frozen):
    task_type: str | None = None
    requested: str | None = Field(None, description="Canonical model the client asked for.")
    metadata: dict[str, str] = Field(default_factory=dict)
    target: str


GuardAction = Literal["redact", "block", "flag"]


class GuardRule(_Frozen):
    """A built-in detector (see gateway/guardrails/detectors.py) or a tenant pattern
    (``regex`` set), with its action on input, output or both."""

    detector: str
    action: GuardAction = "redact"
    input: bool = True
    output: bool = True
    regex: str | None = Field(None, description="RE2 syntax, longest match <= max_length.")
    max_length: int | None = None


class DataPolicy(_Frozen):
    rules: tuple[GuardRule, ...] = ()
    prompt_injection: GuardAction | Literal["off"] = "flag"


class TenantPolicy(_Frozen):
    id: str
    display_name: str
    models: frozenset[str] = Field(description="Canonical model names this tenant may call.")
    limits: Limits = Limits()
    budget: Budget | None = None
    oidc: OIDCProvider | None = None
    rules: tuple[RoutingRule, ...] = ()
    department: str | None = None
    project: str | None = None
    state_outage_policy: StateOutagePolicy | None = Field(
        None,
        description="While the shared state is unreachable: admit on local limits or refuse; "
        "None follows the gateway's --redis-failure-policy.",
    )
    data_policy: DataPolicy | None = Field(
        None, description="Guardrails on prompts and answers; None: none, at no cost."
    )
    audit_prompts: Literal["off", "hash", "redacted"] = Field(
        "off", description="What a request's audit record keeps of its prompt."
    )
    audit_retention_days: int | None = Field(
        None, description="Days the audit files must keep this tenant's records."
    )

    @field_serializer("models")
    def _sorted(self, models: frozenset[str]) -> list[str]:
        return sorted(models)


class ApiKeyEntry(_Frozen):
    tenant: str
    name: str
    role: Role
    limits: Limits = Limits()


ExperimentUnit = Literal["user", "apiKey", "header", "request"]


class ExperimentVariant(_Frozen):
    name: str
    model: str = Field(description="Canonical name of the model that answers.")
    weight: int
    overrides: dict[str, float | int] = Field(
        default_factory=dict, description="Body parameters set for this variant."
    )
    system_prompt_prefix: str | None = None


class ExperimentMetric(_Frozen):
    name: str
    direction: Literal["increase", "decrease"]
    margin: float | None = Field(None, description="Guardrails: how much worse is acceptable.")


class ExperimentAnalysis(_Frozen):
    alpha: float = 0.05
    srm_alpha: float = 0.001
    min_units_per_variant: int = 200
    max_units: int | None = None
    max_duration_s: float | None = None
    interval_s: float = 300.0


class ExperimentPolicy(_Frozen):
    id: str = Field(description="`namespace/name` of the Experiment.")
    model: str = Field(description="Canonical name of the model whose requests it splits.")
    tenants: frozenset[str]
    unit: ExperimentUnit
    unit_header: str | None = None
    variants: tuple[ExperimentVariant, ...]
    control: str
    exposure_percent: int
    epoch: str = Field(description="Names the current split: a new split, a new analysis.")
    routed_to: str | None = Field(
        None, description="A variant that takes all traffic (after Promote or Rollback)."
    )
    started_at: float | None = Field(None, description="Its creation, epoch seconds.")
    primary: ExperimentMetric
    guardrails: tuple[ExperimentMetric, ...] = ()
    analysis: ExperimentAnalysis = ExperimentAnalysis()

    @field_serializer("tenants")
    def _sorted_tenants(self, tenants: frozenset[str]) -> list[str]:
        return sorted(tenants)

    def variant(self, name: str) -> ExperimentVariant:
        return next(v for v in self.variants if v.name == name)


class GatewayConfig(_Frozen):
    version: Literal[1] = CONFIG_VERSION
    models: dict[str, ModelRoute] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Alias → canonical model name."
    )
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)
    api_keys: dict[str, ApiKeyEntry] = Field(
        default_factory=dict, description="sha256 hex digest of a key → who holds it."
    )
    experiments: dict[str, ExperimentPolicy] = Field(
        default_factory=dict, description="Experiment id → its split."
    )
    slos: dict[str, SLOPolicy] = Field(
        default_factory=dict, description="SLAPolicy id → what this gateway counts for it."
    )

    @functools.cached_property
    def derived(self) -> dict[Hashable, Any]:
        """Objects the gateway derives from this configuration on the request path (the
        identity of each key), made once and dropped with the configuration."""
        return {}

    def fingerprint(self) -> str:
        """A short content hash, logged on every reload so operators can tell configs apart."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def resolve(self, name: str) -> ModelRoute | None:
        """The model a client's ``model`` field names, through aliases."""
        return self.models.get(self.aliases.get(name, name))


def hash_api_key(key: str) -> str:
    """How a key is stored everywhere but in its own Secret: a sha256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()
