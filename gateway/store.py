"""The configuration in force, swapped atomically when a new one is compiled."""

from __future__ import annotations

import logging

from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.errors import NotReady

logger = logging.getLogger(__name__)


class ConfigStore:
    """Holds the last good GatewayConfig.

    A request reads ``current`` once and uses that object to the end, so a reload in the
    middle of a request never mixes two configurations.
    """

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self._config = config
        self.fingerprint = config.fingerprint() if config else None

    @property
    def ready(self) -> bool:
        return self._config is not None

    @property
    def current(self) -> GatewayConfig:
        if self._config is None:
            raise NotReady("the gateway has no valid configuration yet")
        return self._config

    def replace(self, config: GatewayConfig) -> bool:
        """Put ``config`` in force; False when it is the same as the one in force."""
        fingerprint = config.fingerprint()
        if fingerprint == self.fingerprint:
            return False
        self._config, self.fingerprint = config, fingerprint
        logger.info(
            "configuration %s in force: %d models, %d tenants, %d keys",
            fingerprint,
            len(config.models),
            len(config.tenants),
            len(config.api_keys),
        )
        return True
