"""The gateway in a cluster: its configuration is the GatewayConfig Secret the operator
publishes, watched through the API and swapped in live; an invalid one is logged and the
last good one stays in force."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from kubernetes import client, config, watch
from pydantic import ValidationError

from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.keys import METRICS, STORE
from llmrouter.operator.render import GATEWAY_CONFIG_KEY

logger = logging.getLogger(__name__)


def load_kube_config(kubeconfig: str | None = None) -> None:
    if kubeconfig:
        config.load_kube_config(kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def decode(secret: client.V1Secret) -> GatewayConfig:
    raw = (secret.data or {}).get(GATEWAY_CONFIG_KEY)
    if raw is None:
        raise ValueError(f"the Secret has no {GATEWAY_CONFIG_KEY} key")
    return GatewayConfig.model_validate_json(base64.b64decode(raw))


class SecretWatcher:
    """Watches one Secret from a thread and hands each good configuration to ``apply``."""

    def __init__(
        self, namespace: str, name: str, apply: Callable[[GatewayConfig | None, str | None], None]
    ) -> None:
        self.namespace, self.name, self._apply = namespace, name, apply
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="config-watch", daemon=True)

    def _run(self) -> None:
        api = client.CoreV1Api()
        while not self._stopped.is_set():
            try:
                for event in self._watch.stream(
                    api.list_namespaced_secret,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=60,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._take(event["object"])
            except Exception as exc:
                if not self._stopped.is_set():
                    logger.warning(
                        "watching Secret %s/%s failed (%s); retrying",
                        self.namespace,
                        self.name,
                        exc,
                    )
                    self._stopped.wait(1)

    def _take(self, secret: client.V1Secret) -> None:
        try:
            self._apply(decode(secret), None)
        except (ValueError, ValidationError) as exc:
            self._apply(None, f"Secret {self.namespace}/{self.name}: {exc}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


def config_watcher(
    namespace: str, name: str
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A cleanup_ctx that keeps the app's configuration that of the Secret."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def apply(config: GatewayConfig | None, error: str | None) -> None:
            loop.call_soon_threadsafe(_swap, app, config, error)

        watcher = SecretWatcher(namespace, name, apply)
        watcher.start()
        yield
        watcher.stop()

    return ctx


def _swap(app: web.Application, config: GatewayConfig | None, error: str | None) -> None:
    if config is None:
        app[METRICS].config_reloads.labels("error").inc()
        logger.error("configuration not loaded, keeping the last good one: %s", error)
        return
    app[METRICS].config_reloads.labels("ok").inc()
    app[STORE].replace(config)
