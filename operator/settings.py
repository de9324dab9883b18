"""Settings of the operator, from its environment."""

from __future__ import annotations

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

    compile_debounce_s: float = 0.05
    """Changes arriving this close together are compiled once."""


SETTINGS = OperatorSettings()
