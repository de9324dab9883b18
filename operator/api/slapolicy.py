"""SLAPolicy: a tenant's service level objectives, the alerting rules generated from them,
and their compliance.

Latency and TTFT objectives read the gateway's histograms, so a threshold must be one of
their bucket boundaries (``llmrouter.gateway.sli.LATENCY_BUCKETS``): both the CRD (CEL)
and the model refuse any other value, naming the allowed ones.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from llmrouter.gateway.sli import LATENCY_BUCKETS, bucket_for
from llmrouter.operator.api.common import (
    DNS_SUBDOMAIN,
    Duration,
    ModelName,
    Resource,
    SpecModel,
    parse_duration,
    schema_extra,
)
from llmrouter.operator.api.status import CommonStatus

OBJECTIVE_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# A percentage below 100 with up to six decimals: "99.9", "95", "99.95".
PERCENT_PATTERN = r"^[0-9]{1,2}(\.[0-9]{1,6})?$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"

WINDOW_DAYS = {"28d": 28, "30d": 30}


def _duration_text(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


ALLOWED_THRESHOLDS = ", ".join(_duration_text(b) for b in LATENCY_BUCKETS)
_THRESHOLD_MESSAGE = f"threshold must be a histogram bucket boundary: one of {ALLOWED_THRESHOLDS}"
_THRESHOLD_RULE = (
    "!has(self.threshold) || ["
    + ", ".join(f"duration('{_duration_text(b)}')" for b in LATENCY_BUCKETS)
    + "].exists(d, d == duration(self.threshold))"
)


class Objective(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.type != 'availability' || "
                    "(has(self.target) && !has(self.percentile) && !has(self.threshold))",
                    "message": "an availability objective takes target, not percentile "
                    "or threshold",
                },
                {
                    "rule": "self.type == 'availability' || "
                    "(has(self.percentile) && has(self.threshold) && !has(self.target))",
                    "message": "a latency or ttft objective takes percentile and threshold, "
                    "not target",
                },
                {"rule": _THRESHOLD_RULE, "message": _THRESHOLD_MESSAGE},
            ],
        }
    ),
):
    """availability: target % of requests answered without a 5xx. latency, ttft:
    percentile % of requests (whole answer, or first token) within threshold."""

    name: Annotated[str, Field(pattern=OBJECTIVE_NAME, max_length=63)]
    type: Literal["availability", "latency", "ttft"]
    target: Annotated[str, Field(pattern=PERCENT_PATTERN)] | None = Field(
        None, description='Availability in percent, e.g. "99.9".'
    )
    percentile: Annotated[float, Field(ge=1, le=99.9999)] | None = Field(
        None, description="Share of requests in percent that must be within threshold: 95."
    )
    threshold: Duration | None = Field(
        None, description=f"A histogram bucket boundary: {ALLOWED_THRESHOLDS}."
    )

    @model_validator(mode="after")
    def _fields_of_type(self) -> Objective:
        if self.type == "availability":
            if self.target is None or self.percentile is not None or self.threshold is not None:
                raise ValueError(
                    "an availability objective takes target, not percentile or threshold"
                )
        elif self.percentile is None or self.threshold is None or self.target is not None:
            raise ValueError(
                "a latency or ttft objective takes percentile and threshold, not target"
            )
        if self.threshold is not None and bucket_for(parse_duration(self.threshold)) is None:
            raise ValueError(f"{_THRESHOLD_MESSAGE} (got {self.threshold})")
        if self.objective_percent <= 0:
            raise ValueError("the objective must be above 0 %")
        return self

    @property
    def objective_percent(self) -> Decimal:
        """The share of good events promised, in percent."""
        if self.target is not None:
            return Decimal(self.target)
        return Decimal(str(self.percentile))

    @property
    def threshold_seconds(self) -> float | None:
        if self.threshold is None:
            return None
        return bucket_for(parse_duration(self.threshold))


class Severities(SpecModel):
    page: Annotated[str, Field(min_length=1, max_length=63)] = "critical"
    ticket: Annotated[str, Field(min_length=1, max_length=63)] = "warning"


class Alerting(SpecModel):
    """Multiwindow, multi-burn-rate alerts (SRE Workbook, ch. 5)."""

    enabled: bool = True
    severities: Severities = Field(default_factory=Severities)
    min_requests_per_hour: Annotated[int, Field(ge=0, le=10**12)] = Field(
        60,
        description="No alert while the last hour saw fewer requests than this: a few "
        "failures of little traffic would otherwise page.",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Added to every alert, e.g. runbook_url."
    )

    @field_validator("labels", "annotations")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(LABEL_NAME, key):
                raise ValueError(f"{key!r} is not a Prometheus label name")
        return value


class SLAPolicySpec(SpecModel):
    tenant: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="The Tenant, in this namespace, whose requests the objectives are about."
    )
    models: list[ModelName] = Field(
        default_factory=list,
        max_length=64,
        description="Model names as the gateway counts them; empty: all the tenant's models.",
    )
    window: Literal["28d", "30d"] = Field("30d", description="Rolling compliance window.")
    objectives: Annotated[
        list[Objective],
        Field(
            min_length=1,
            max_length=16,
            # The API server refuses two objectives of one name ("Duplicate value").
            json_schema_extra=schema_extra(
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
            ),
        ),
    ]
    alerting: Alerting = Field(default_factory=Alerting)
    rule_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the PrometheusRule, to match a Prometheus ruleSelector "
        "(e.g. release: kube-prometheus-stack).",
    )

    @field_validator("objectives")
    @classmethod
    def _unique_names(cls, value: list[Objective]) -> list[Objective]:
        names = [o.name for o in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"objective names must be unique: {', '.join(duplicates)}")
        return value

    @property
    def window_days(self) -> int:
        return WINDOW_DAYS[self.window]


class BurnRates(SpecModel):
    h1: float | None = Field(None, alias="1h")
    h6: float | None = Field(None, alias="6h")
    d1: float | None = Field(None, alias="1d")
    d3: float | None = Field(None, alias="3d")


ObjectiveState = Literal["ok", "warning", "breached", "noData"]


class ObjectiveStatus(SpecModel):
    name: str
    sli: float | None = Field(None, description="Good events / events over the window, 0..1.")
    error_budget_remaining: float | None = Field(
        None, description="Share of the window's error budget left; negative once overspent."
    )
    burn_rates: BurnRates = Field(default_factory=BurnRates)
    good_events: float | None = None
    total_events: float | None = None
    state: ObjectiveState = "noData"


class SLAPolicyStatus(CommonStatus):
    compliant: bool | None = None
    budget: str | None = Field(
        None, description="The lowest error budget remaining of the objectives, in percent."
    )
    last_evaluated: str | None = None
    evaluated_generation: int | None = Field(
        None, description="The spec generation lastEvaluated was computed for."
    )
    source: str | None = Field(
        None, description="prometheus, or gateways (their own counts: an approximation)."
    )
    objectives: list[ObjectiveStatus] = Field(default_factory=list)


class SLAPolicy(Resource):
    kind: Literal["SLAPolicy"] = "SLAPolicy"
    spec: SLAPolicySpec
    status: SLAPolicyStatus | None = None
