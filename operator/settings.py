"""Settings of the operator, from its environment."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str = field(
        default_factory=lambda: os.environ.get("LLMROUTER_NAMESPACE", "llmrouter")
    )
    """Where the compiled gateway configuration Secret lives (the gateway's namespace)."""

    config_secret: str = field(
        default_factory=lambda: os.environ.get(
            "LLMROUTER_CONFIG_SECRET", "llmrouter-gateway-config"
        )
    )
    """Name of the Secret holding the compiled GatewayConfig."""

    gateway_image: str = field(
        default_factory=lambda: os.environ.get(
            "LLMROUTER_GATEWAY_IMAGE", "ghcr.io/llmrouter/llmrouter:0.1.0"
        )
    )
    """Image of the gateway pods the operator runs."""

    gateway_replicas: int = field(
        default_factory=lambda: int(os.environ.get("LLMROUTER_GATEWAY_REPLICAS", "2"))
    )
    """Gateway pods; with more than one, set a Redis state URL so they share limits."""

    gateway_state_url: str | None = field(
        default_factory=lambda: os.environ.get("LLMROUTER_STATE_URL") or None
    )
    """redis://… for the gateway's shared state."""

    gateway_workers: int = field(
        default_factory=lambda: int(os.environ.get("LLMROUTER_GATEWAY_WORKERS", "1"))
    )
    """Worker processes in each gateway pod (one per CPU it may use); more than one only
    with a state URL, since workers share their limits through it."""

    gateway_max_in_flight: int = field(
        default_factory=lambda: int(os.environ.get("LLMROUTER_GATEWAY_MAX_IN_FLIGHT", "1000"))
    )
    """Requests each gateway process serves at once (its --max-in-flight)."""

    gateway_service_account: str = field(
        default_factory=lambda: os.environ.get(
            "LLMROUTER_GATEWAY_SERVICE_ACCOUNT", "llmrouter-gateway"
        )
    )
    """The gateway pods' ServiceAccount: it may read the configuration Secret, no more."""

    model_network_policy: bool = field(
        default_factory=lambda: os.environ.get("LLMROUTER_MODEL_NETWORK_POLICY", "true") == "true"
    )
    """A NetworkPolicy per llama.cpp ModelDeployment lets only gateway pods reach its
    servers; off where the cluster's network plugin or another policy already sees to it."""

    rotation_overlap_s: float = field(
        default_factory=lambda: float(os.environ.get("LLMROUTER_ROTATION_OVERLAP", "300"))
    )
    """After a key rotation, the old key keeps working this long, so clients can move to
    the new one without a gap (0: it stops at once)."""

    resync_s: float = 30.0
    """Recompile at least this often, even when no watched resource changed."""

    compile_debounce_s: float = 0.05
    """Changes arriving this close together are compiled once."""

    usage_interval_s: float = field(
        default_factory=lambda: float(os.environ.get("LLMROUTER_USAGE_INTERVAL", "30"))
    )
    """How often each Tenant's status.usage is refreshed from the shared state (Redis)."""

    experiment_interval_s: float = field(
        default_factory=lambda: float(os.environ.get("LLMROUTER_EXPERIMENT_INTERVAL", "10"))
    )
    """How often Experiments are looked at; each is analysed when its spec.analysis.interval
    has passed since the last time."""


def current() -> OperatorSettings:
    """The settings from the environment: made again only when an LLMROUTER_ variable
    changed (an operator started again in one process, as tests do, sees its own)."""
    return _settings(tuple(sorted(i for i in os.environ.items() if i[0].startswith("LLMROUTER_"))))


@functools.lru_cache(maxsize=8)
def _settings(environment: tuple[tuple[str, str], ...]) -> OperatorSettings:
    return OperatorSettings()
