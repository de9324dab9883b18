"""All resources → one compiled GatewayConfig Secret, recompiled soon after any change.

A resource that cannot be compiled (a Tenant naming a model that does not exist, two
models claiming one name) is left out and told so in a condition; it never holds back the
configuration of the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.gateway.config import GatewayConfig, hash_api_key
from llmrouter.operator import kube, settings
from llmrouter.operator.api.common import API_VERSION, GROUP, VERSION
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.api.tenant import Tenant
from llmrouter.operator.compile import CompileError, Problem, Resources, compile_config
from llmrouter.operator.controllers.conditions import condition
from llmrouter.operator.render import (
    API_KEY_LABEL,
    PROVIDER_CREDENTIAL_LABEL,
    TENANT_LABEL,
    provider_secret_name,
    render_gateway_config_secret,
    render_gateway_deployment,
    render_gateway_service,
    render_provider_secret_copy,
)

logger = logging.getLogger(__name__)

_changed: asyncio.Event | None = None


def request_compile() -> None:
    """Ask for a recompile; any thread may call it."""
    if _changed is not None and _loop is not None:
        _loop.call_soon_threadsafe(_changed.set)


_loop: asyncio.AbstractEventLoop | None = None


def read_resources() -> Resources:
    tenants, models = [], []
    for item in kube.list_objects(API_VERSION, "Tenant"):
        try:
            tenants.append(Tenant.model_validate(item))
        except ValidationError:
            continue  # its own handler reports why
    for item in kube.list_objects(API_VERSION, "ModelDeployment"):
        try:
            models.append(ModelDeployment.model_validate(item))
        except ValidationError:
            continue
    hashes = {}
    for secret in kube.list_objects(
        "v1", "Secret", label_selector=f"{TENANT_LABEL},{API_KEY_LABEL}"
    ):
        labels = secret["metadata"]["labels"]
        tenant_id = f"{secret['metadata']['namespace']}/{labels[TENANT_LABEL]}"
        key = base64.b64decode(secret["data"]["apiKey"]).decode()
        hashes[(tenant_id, labels[API_KEY_LABEL])] = hash_api_key(key)
    return Resources(tenants=tenants, models=models, api_key_hashes=hashes)


def compile_leaving_out(resources: Resources) -> tuple[GatewayConfig, list[Problem]]:
    """Compile what can be compiled; the problems of what was left out."""
    problems: list[Problem] = []
    while True:
        try:
            return compile_config(resources), problems
        except CompileError as exc:
            problems += exc.problems
            bad = {p.ref for p in exc.problems}
            resources = Resources(
                tenants=[t for t in resources.tenants if t.ref not in bad],
                models=[m for m in resources.models if m.ref not in bad],
                api_key_hashes=resources.api_key_hashes,
                endpoints=resources.endpoints,
            )


def copy_provider_secrets(resources: Resources) -> None:
    """The gateway may read Secrets of its own namespace only: the provider keys that
    ModelDeployments name are copied there, and copies no longer named are removed."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for md in resources.models:
        ref = md.spec.external.api_key_secret_ref if md.spec.external else None
        if ref is not None:
            wanted.setdefault((md.metadata.namespace, ref.name), set()).add(ref.key)
    gateway_namespace = settings.current().namespace
    keep = set()
    for (namespace, name), keys in sorted(wanted.items()):
        source = kube.get("v1", "Secret", name, namespace)
        data = {k: v for k, v in ((source or {}).get("data") or {}).items() if k in keys}
        if data:
            kube.apply(render_provider_secret_copy(gateway_namespace, namespace, name, data))
            keep.add(provider_secret_name(namespace, name))
    for copy in kube.list_objects("v1", "Secret", gateway_namespace, PROVIDER_CREDENTIAL_LABEL):
        if copy["metadata"]["name"] not in keep:
            kube.delete("v1", "Secret", copy["metadata"]["name"], gateway_namespace)


def compile_and_publish() -> str:
    resources = read_resources()
    copy_provider_secrets(resources)
    config, problems = compile_leaving_out(resources)
    ours = settings.current()
    secret = render_gateway_config_secret(ours.config_secret, ours.namespace, config)
    current = kube.get("v1", "Secret", ours.config_secret, ours.namespace)
    fingerprint = config.fingerprint()
    if (
        current is None
        or (current["metadata"].get("annotations") or {}).get("llmrouter.io/config-fingerprint")
        != fingerprint
    ):
        kube.apply(secret)
        logger.info(
            "published gateway configuration %s (%d models, %d tenants, %d keys)",
            fingerprint,
            len(config.models),
            len(config.tenants),
            len(config.api_keys),
        )
    for problem in problems:
        kind, _, ref = problem.ref.partition(" ")
        namespace, _, name = ref.partition("/")
        plural = "Tenant" if kind == "Tenant" else "ModelDeployment"
        kube.patch_status(
            API_VERSION,
            plural,
            name,
            namespace,
            {
                "conditions": [
                    condition(
                        "Compiled", False, "CompileError", f"{problem.field}: {problem.message}"
                    )
                ]
            },
        )
    return fingerprint


@kopf.on.startup()
def apply_gateway(logger: Any, **_: Any) -> None:
    """The gateway Deployment and Service, in the operator's namespace."""
    for obj in (
        render_gateway_deployment(settings.current()),
        render_gateway_service(settings.current()),
    ):
        kube.apply(obj)
    logger.info("applied the gateway Deployment and Service in %s", settings.current().namespace)


@kopf.on.startup()
async def start_compiler(memo: kopf.Memo, **_: Any) -> None:
    global _changed, _loop
    _changed, _loop = asyncio.Event(), asyncio.get_running_loop()
    memo["compiler"] = asyncio.create_task(_compile_loop(_changed))
    _changed.set()


@kopf.on.cleanup()
async def stop_compiler(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("compiler")
    if task is not None:
        task.cancel()


async def _compile_loop(changed: asyncio.Event) -> None:
    while True:
        # Also every so often: provider key Secrets are not watched, and may change.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), settings.current().resync_s)
        await asyncio.sleep(settings.current().compile_debounce_s)
        changed.clear()
        try:
            await asyncio.to_thread(compile_and_publish)
        except Exception:  # the loop must outlive any one failure; the next change retries
            logger.exception("compiling the gateway configuration failed")
            await asyncio.sleep(1)
            changed.set()


@kopf.on.event(GROUP, VERSION, "tenants")
@kopf.on.event(GROUP, VERSION, "modeldeployments")
@kopf.on.event("v1", "secrets", labels={API_KEY_LABEL: kopf.PRESENT})
def resource_changed(**_: Any) -> None:
    request_compile()
