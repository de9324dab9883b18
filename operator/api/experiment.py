"""Experiment: an A/B test of one requested model name across variant models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from llmrouter.operator.api.common import (
    Duration,
    ModelName,
    Resource,
    SpecModel,
    schema_extra,
)
from llmrouter.operator.api.status import CommonStatus

VARIANT_NAME = r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"
HEADER_NAME = r"^[A-Za-z0-9-]{1,64}$"
PROBABILITY = r"^0?\.[0-9]+$"
TENANT_REF = r"^(\*|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$"

MetricName = Literal["errorRate", "latency", "ttft", "costPerRequest", "outputTokens", "feedback"]
METRIC_DIRECTIONS: dict[str, Literal["increase", "decrease"]] = {
    "errorRate": "decrease",
    "latency": "decrease",
    "ttft": "decrease",
    "costPerRequest": "decrease",
    "outputTokens": "decrease",
    "feedback": "increase",
}
"""Which way each metric is better, unless the spec says otherwise."""


class VariantOverrides(SpecModel):
    """Request parameters a variant sets, replacing the client's."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    system_prompt_prefix: Annotated[str, Field(max_length=8192)] | None = Field(
        None, description="Put before the system prompt (or as one, when there is none)."
    )


class Variant(SpecModel):
    name: Annotated[str, Field(pattern=VARIANT_NAME, max_length=32)]
    model: ModelName
    weight: Annotated[int, Field(ge=0, le=10_000)] = 1
    overrides: VariantOverrides = Field(default_factory=VariantOverrides)


class PrimaryMetric(SpecModel):
    name: MetricName
    direction: Literal["increase", "decrease"] | None = Field(
        None, description="Which way is better; default: lower for all but feedback."
    )


class Guardrail(SpecModel):
    name: MetricName
    margin: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")] = Field(
        description="How much worse than control is still acceptable, in the metric's unit: "
        "errorRate as a fraction (0.01 = one point), latency and ttft in seconds, "
        "costPerRequest in USD, outputTokens in tokens, feedback in score points."
    )


class Metrics(SpecModel):
    primary: PrimaryMetric
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=6)


class Analysis(SpecModel):
    alpha: Annotated[str, Field(pattern=PROBABILITY)] = "0.05"
    min_units_per_variant: Annotated[int, Field(ge=1, le=10**9)] = 200
    max_units: Annotated[int, Field(ge=2, le=10**12)] | None = None
    max_duration: Duration | None = Field(None, description="e.g. 336h (14 days).")
    interval: Duration = "5m"
    srm_alpha: Annotated[str, Field(pattern=PROBABILITY)] = "0.001"


class Policy(SpecModel):
    on_win: Literal["Report", "Promote"] = "Report"
    on_harm: Literal["Report", "Rollback"] = "Rollback"


class ExperimentSpec(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.variants.exists(v, v.name == self.control)",
                    "message": "control must name one of the variants",
                },
                {
                    "rule": "self.variants.exists(v, v.weight > 0)",
                    "message": "at least one variant needs a weight above zero",
                },
                {
                    "rule": "(has(self.unit) && self.unit == 'header') == has(self.unitHeader)",
                    "message": "unitHeader is required with unit: header, and only then",
                },
            ],
        }
    ),
):
    model: ModelName = Field(description="The model name clients send (a model or alias).")
    tenants: list[Annotated[str, Field(pattern=TENANT_REF)]] = Field(
        min_length=1,
        max_length=1000,
        description="Tenants of this namespace it applies to; `*` for all of them.",
    )
    unit: Literal["user", "apiKey", "header", "request"] = Field(
        "user",
        description="What is randomised: the user (OIDC subject, else the body's `user`), "
        "the API key, a header's value (unitHeader), or each request.",
    )
    unit_header: Annotated[str, Field(pattern=HEADER_NAME)] | None = None
    variants: list[Variant] = Field(
        min_length=2,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    control: Annotated[str, Field(pattern=VARIANT_NAME, max_length=32)]
    exposure_percent: Annotated[int, Field(ge=0, le=100)] = 100
    metrics: Metrics
    analysis: Analysis = Field(default_factory=Analysis)
    policy: Policy = Field(default_factory=Policy)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.control not in names:
            raise ValueError(f"control {self.control!r} is not one of the variants {names}")
        if not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above zero")
        if (self.unit == "header") != (self.unit_header is not None):
            raise ValueError("unitHeader is required with unit: header, and only then")
        for name in (self.analysis.alpha, self.analysis.srm_alpha):
            if not 0 < Decimal(name) < 1:
                raise ValueError("alpha and srmAlpha must be between 0 and 1")
        return self

    def direction(self, metric: str) -> Literal["increase", "decrease"]:
        primary = self.metrics.primary
        if metric == primary.name and primary.direction is not None:
            return primary.direction
        return METRIC_DIRECTIONS[metric]


class VariantStatus(SpecModel):
    name: str
    model: str
    units: int = 0
    requests: int = 0
    expected_share: float = 0.0
    observed_share: float = 0.0


class MetricResult(SpecModel):
    metric: str
    variant: str
    n: int
    mean: float | None = None
    control_mean: float | None = None
    delta: float | None = None
    lift: float | None = None
    interval: list[float] = Field(default_factory=list)
    p_value: float | None = None
    call: str = "Undecided"


class SRMStatus(SpecModel):
    chi_square: float | None = None
    p_value: float | None = None
    sequential_p_value: float | None = None
    detected: bool = False


class Verdict(SpecModel):
    decision: str = "Running"
    winner: str | None = None
    reason: str = ""
    decided_at: str | None = None


class ExperimentStatus(CommonStatus):
    phase: str | None = None
    epoch: str | None = None
    routed_to: str | None = Field(
        None,
        description="A variant that gets all of the model's traffic, set by the policy "
        "(Promote: the winner, Rollback: control); the spec is never changed.",
    )
    variants: list[VariantStatus] = Field(default_factory=list)
    results: list[MetricResult] = Field(default_factory=list)
    srm: SRMStatus | None = None
    verdict: Verdict | None = None
    last_analyzed: str | None = None
    lift: str | None = Field(None, description="The primary metric's lift, for kubectl.")
    p_value: str | None = Field(None, description="The primary metric's p, for kubectl.")


class Experiment(Resource):
    kind: Literal["Experiment"] = "Experiment"
    spec: ExperimentSpec
    status: ExperimentStatus | None = None

    @property
    def experiment_id(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"
