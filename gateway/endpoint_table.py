"""Every model server the configuration names, with its breaker and load, kept across
configuration reloads; and the poller that asks llama-servers how busy they are."""

from __future__ import annotations

import logging

import aiohttp

from llmrouter.gateway.config import GatewayConfig, ModelRoute, Upstream
from llmrouter.gateway.credentials import CredentialSource
from llmrouter.gateway.endpoints import BreakerSettings, Endpoint

logger = logging.getLogger(__name__)

LOAD_METRICS = ("llamacpp:requests_processing", "llamacpp:requests_deferred")


class EndpointTable:
    def __init__(self, breaker: BreakerSettings | None = None) -> None:
        self._breaker = breaker or BreakerSettings()
        self._synced: GatewayConfig | None = None
        self._by_model: dict[str, list[Endpoint]] = {}
        self._upstreams: dict[tuple[str, str], Upstream] = {}

    def endpoints(self, config: GatewayConfig, route: ModelRoute) -> list[Endpoint]:
        self.sync(config)
        return self._by_model.get(route.name, [])

    def upstream(self, endpoint: Endpoint) -> Upstream:
        return self._upstreams[(endpoint.model, endpoint.url)]

    def secret(self, endpoint: Endpoint, credentials: CredentialSource) -> str | None:
        """The key the endpoint's server requires, if any (in a cluster, llama-servers)."""
        upstream = self._upstreams.get((endpoint.model, endpoint.url))
        if upstream is None or upstream.credential is None:
            return None
        return credentials.get(upstream.credential)

    def all(self) -> list[Endpoint]:
        return [e for endpoints in self._by_model.values() for e in endpoints]

    def sync(self, config: GatewayConfig) -> None:
        """Endpoints of the new configuration, keeping the state of those it kept."""
        if config is self._synced:
            return
        old = {(e.model, e.url): e for e in self.all()}
        self._by_model, self._upstreams = {}, {}
        for route in config.models.values():
            endpoints = []
            for upstream in route.upstreams:
                key = (route.name, upstream.base_url)
                endpoint = old.get(key) or Endpoint(
                    route.name, upstream.base_url, settings=self._breaker
                )
                endpoint.slots = route.slots
                endpoint.pollable = route.engine == "llamacpp"
                endpoints.append(endpoint)
                self._upstreams[key] = upstream
            self._by_model[route.name] = endpoints
        self._synced = config


def _server_root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def parse_load(metrics_text: str) -> int:
    """Requests a llama-server runs or queues, from its Prometheus text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(LOAD_METRICS):
            total += float(line.rsplit(None, 1)[-1])
    return int(total)


async def poll_once(
    session: aiohttp.ClientSession, endpoint: Endpoint, secret: str | None = None
) -> None:
    root = _server_root(endpoint.url)
    timeout = aiohttp.ClientTimeout(total=1)
    # A server started with an API key answers /metrics only with it (/health stays open).
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    try:
        async with session.get(f"{root}/metrics", timeout=timeout, headers=headers) as resp:
            if resp.status == 200:
                endpoint.reported_load = parse_load(await resp.text())
                endpoint.reachable = True
                return
        async with session.get(f"{root}/health", timeout=timeout) as resp:
            endpoint.reported_load = None
            # llama-server answers 503 while its model loads; a server without the
            # endpoint at all (404) says nothing against itself.
            endpoint.reachable = resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        if endpoint.reachable:
            logger.warning("model %s: endpoint %s unreachable", endpoint.model, endpoint.url)
        endpoint.reachable = False
        endpoint.reported_load = None
