"""ModelDeployment: one model a client can name, served by llama.cpp or an external provider."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from llmrouter.operator.api.common import (
    DNS_SUBDOMAIN,
    USD,
    Duration,
    ModelName,
    Resource,
    SpecModel,
    schema_extra,
)
from llmrouter.operator.api.status import CommonStatus

URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
LOOPBACK_HTTP = r"^http://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?(/.*)?$"
"""Plain http that never leaves the machine (in a cluster: the gateway's own pod)."""
SHA256 = r"^[0-9a-fA-F]{64}$"
_PLAIN_HTTP_MODEL = (
    "a model url over plain http needs sha256: anyone on the way could replace the file"
)
_PLAIN_HTTP_KEY = (
    "apiKeySecretRef needs an https baseURL: over plain http the key travels readable "
    "(only localhost may use http)"
)


class PVCSource(SpecModel):
    claim_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN)]
    path: Annotated[str, Field(min_length=1, description="Path of the .gguf file in the volume.")]


class ModelSource(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.url) != has(self.pvc)",
                    "message": "model needs exactly one of url or pvc",
                },
                {
                    "rule": "!has(self.url) || !self.url.startsWith('http://') || has(self.sha256)",
                    "message": _PLAIN_HTTP_MODEL,
                },
                {"rule": "!has(self.sha256) || has(self.url)", "message": "sha256 needs url"},
            ],
        }
    ),
):
    """Where llama-server finds its GGUF file: downloaded from a URL, or on a PVC."""

    url: Annotated[str | None, Field(pattern=URL_PATTERN)] = None
    sha256: Annotated[str | None, Field(pattern=SHA256)] = Field(
        None, description="Hex SHA-256 of the file at url: the pod refuses any other file."
    )
    pvc: PVCSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if (self.url is None) == (self.pvc is None):
            raise ValueError("model needs exactly one of url or pvc")
        if self.url is not None and self.url.startswith("http://") and self.sha256 is None:
            raise ValueError(_PLAIN_HTTP_MODEL)
        if self.sha256 is not None and self.url is None:
            raise ValueError("sha256 needs url")
        return self


class ServerResources(SpecModel):
    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    cpu: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$")] = "1"
    memory: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")] = "2Gi"


class LlamaCppSpec(SpecModel):
    """A model served in the cluster by llama.cpp's `llama-server`."""

    image: Annotated[str, Field(min_length=1)] = "ghcr.io/ggml-org/llama.cpp:server"
    model: ModelSource
    context_size: Annotated[int, Field(ge=128, le=1_048_576)] = 4096
    parallel: Annotated[int, Field(ge=1, le=256, description="llama-server --parallel")] = 1
    gpu_layers: Annotated[int, Field(ge=0, le=10_000)] = 999
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    embeddings: bool = Field(False, description="Serve /v1/embeddings (--embeddings).")
    resources: ServerResources = Field(default_factory=ServerResources)
    extra_args: list[str] = Field(default_factory=list)


Provider = Literal["openai", "anthropic", "azure-openai", "openai-compatible"]


class SecretKeyRef(SpecModel):
    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN)]
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")]


class ExternalSpec(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.provider != 'azure-openai' || has(self.apiVersion)",
                    "message": "provider azure-openai needs apiVersion",
                },
                {
                    "rule": "!has(self.apiKeySecretRef) || self.baseURL.startsWith('https://') "
                    f"|| self.baseURL.matches(r'{LOOPBACK_HTTP}')",
                    "message": _PLAIN_HTTP_KEY,
                },
            ],
        }
    ),
):
    """A model served outside the cluster by a provider's API."""

    provider: Provider
    base_url: Annotated[str, Field(alias="baseURL", pattern=URL_PATTERN)]
    model: Annotated[str, Field(min_length=1, description="The provider's model name.")]
    api_key_secret_ref: SecretKeyRef | None = None
    deployment: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = Field(
        None, description="Azure OpenAI: the deployment's name (default: model)."
    )
    api_version: (
        Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")] | None
    ) = Field(None, description="Azure OpenAI: the api-version, e.g. 2024-10-21.")

    @model_validator(mode="after")
    def _azure_needs_api_version(self) -> ExternalSpec:
        if self.provider == "azure-openai" and self.api_version is None:
            raise ValueError("provider azure-openai needs apiVersion")
        if (
            self.api_key_secret_ref is not None
            and not self.base_url.startswith("https://")
            and not re.match(LOOPBACK_HTTP, self.base_url)
        ):
            raise ValueError(_PLAIN_HTTP_KEY)
        return self


class Pricing(SpecModel):
    """USD per million tokens, as decimal strings."""

    input_per_million: USD = "0"
    output_per_million: USD = "0"


class Timeouts(SpecModel):
    connect: Duration = "2s"
    first_token: Duration = "30s"
    total: Duration = "300s"


_SELF_FALLBACK = "a model cannot fall back to itself: one of its own names is in fallbacks"


class ModelDeploymentSpec(
    SpecModel,
    json_schema_extra=schema_extra(
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.llamacpp) != has(self.external)",
                    "message": "a ModelDeployment needs exactly one of llamacpp or external",
                },
                {
                    "rule": "!has(self.fallbacks) || !self.fallbacks.exists(f, "
                    "(has(self.aliases) && f in self.aliases) "
                    "|| (has(self.servedName) && f == self.servedName))",
                    "message": _SELF_FALLBACK,
                },
            ],
        }
    ),
):
    served_name: ModelName | None = Field(
        None, description="The name clients send as `model`; defaults to metadata.name."
    )
    aliases: list[ModelName] = Field(
        default_factory=list, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    llamacpp: LlamaCppSpec | None = None
    external: ExternalSpec | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    fallbacks: list[ModelName] = Field(
        default_factory=list, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_output_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        None,
        description="Most output tokens one request may ask for; a request without "
        "max_tokens gets this cap, sent upstream, and budgets reserve for it. Default: "
        "llamacpp its contextSize, external 4096.",
    )

    @model_validator(mode="after")
    def _exactly_one_engine(self) -> ModelDeploymentSpec:
        if (self.llamacpp is None) == (self.external is None):
            raise ValueError("a ModelDeployment needs exactly one of llamacpp or external")
        return self

    @model_validator(mode="after")
    def _names_once_and_no_self_fallback(self) -> ModelDeploymentSpec:
        # The same rules as the CRD's (a list-type set, and the CEL rule), for files.
        for where, names in (("aliases", self.aliases), ("fallbacks", self.fallbacks)):
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: a name appears more than once")
        own = {*self.aliases, *([self.served_name] if self.served_name else [])}
        if own & set(self.fallbacks):
            raise ValueError(_SELF_FALLBACK)
        return self

    @property
    def engine(self) -> Literal["llamacpp", "external"]:
        return "llamacpp" if self.llamacpp is not None else "external"


class ModelDeploymentStatus(CommonStatus):
    engine: str | None = None
    model: str | None = None
    ready_replicas: int | None = None
    endpoint: str | None = None


class ModelDeployment(Resource):
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @property
    def served_name(self) -> str:
        return self.spec.served_name or self.metadata.name
