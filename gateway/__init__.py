"""Data plane: the aiohttp gateway. It knows GatewayConfig, never Kubernetes types."""
