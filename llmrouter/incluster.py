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

from llmrouter.gateway.app import offer_config
from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.credentials import MappingCredentials
from llmrouter.operator.names import provider_copy_name
from llmrouter.operator.render import (
    GATEWAY_CONFIG_KEY,
    PROVIDER_CREDENTIAL_LABEL,
    SOURCE_NAME,
    SOURCE_NAMESPACE,
)

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


SecretEvent = Callable[[str, client.V1Secret], None]


class SecretWatcher:
    """Watches Secrets of one namespace from a thread; ``on_event(type, secret)`` is called
    for each ADDED, MODIFIED and DELETED one. A lost watch is started again."""

    def __init__(
        self,
        namespace: str,
        on_event: SecretEvent,
        *,
        field_selector: str = "",
        label_selector: str = "",
    ) -> None:
        self.namespace, self._on_event = namespace, on_event
        self._selectors = {"field_selector": field_selector, "label_selector": label_selector}
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="secret-watch", daemon=True)

    def _run(self) -> None:
        api = client.CoreV1Api()
        while not self._stopped.is_set():
            try:
                for event in self._watch.stream(
                    api.list_namespaced_secret,
                    self.namespace,
                    timeout_seconds=60,
                    **self._selectors,
                ):
                    self._on_event(event["type"], event["object"])
            except Exception as exc:
                if not self._stopped.is_set():
                    logger.warning(
                        "watching Secrets in %s failed (%s); retrying", self.namespace, exc
                    )
                    self._stopped.wait(1)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


AppContext = Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]


def config_watcher(namespace: str, name: str) -> AppContext:
    """A cleanup_ctx that keeps the app's configuration that of the Secret."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_event(kind: str, secret: client.V1Secret) -> None:
            if kind not in ("ADDED", "MODIFIED"):
                return
            try:
                config = decode(secret)
            except (ValueError, ValidationError) as exc:
                loop.call_soon_threadsafe(
                    offer_config, app, None, f"Secret {namespace}/{name}: {exc}"
                )
                return
            loop.call_soon_threadsafe(offer_config, app, config)

        watcher = SecretWatcher(namespace, on_event, field_selector=f"metadata.name={name}")
        watcher.start()
        yield
        watcher.stop()

    return ctx


def credentials_watcher(namespace: str, credentials: MappingCredentials) -> AppContext:
    """A cleanup_ctx that keeps ``credentials`` those of the provider key copies the operator
    keeps in the gateway's namespace."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_event(kind: str, secret: client.V1Secret) -> None:
            annotations = (secret.metadata.annotations if secret.metadata else None) or {}
            source = (annotations.get(SOURCE_NAMESPACE), annotations.get(SOURCE_NAME))
            if None in source:
                return
            name = secret.metadata.name if secret.metadata else None
            if kind == "DELETED" and stale_copy(name, source):
                return  # a copy under a former name: the current copy holds the values
            values = (
                {}
                if kind == "DELETED"
                else {
                    key: base64.b64decode(value).decode()
                    for key, value in (secret.data or {}).items()
                }
            )
            loop.call_soon_threadsafe(_replace_credentials, credentials, source, values)

        watcher = SecretWatcher(namespace, on_event, label_selector=PROVIDER_CREDENTIAL_LABEL)
        watcher.start()
        yield
        watcher.stop()

    return ctx


def stale_copy(name: str | None, source: tuple[str | None, str | None]) -> bool:
    """Whether a copy is not under the name the operator now gives it (copies made before
    names were hashed are replaced, and their removal must not drop the credential)."""
    namespace, secret = source
    if namespace is None or secret is None:
        return False
    return name != provider_copy_name(namespace, secret)


def _replace_credentials(
    credentials: MappingCredentials, source: tuple[str | None, str | None], values: dict[str, str]
) -> None:
    namespace, name = source
    assert namespace is not None and name is not None
    for stale in [k for k in credentials.values if k[:2] == (namespace, name)]:
        del credentials.values[stale]
    for key, value in values.items():
        credentials.values[(namespace, name, key)] = value
