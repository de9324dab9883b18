"""ModelDeployment → a llama-server Deployment and Service, or a checked external provider."""

from __future__ import annotations

import base64
from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.operator import kube, settings
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.apikeys import generate_api_key
from llmrouter.operator.compile import LLAMACPP_PORT
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition, merged
from llmrouter.operator.names import SERVER_KEY, server_key_secret_name
from llmrouter.operator.render import (
    MANAGED_BY,
    render_deployment,
    render_network_policy,
    render_server_key_secret,
    render_service,
)


@kopf.on.resume(GROUP, VERSION, "modeldeployments")
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
def reconcile(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    request_compile()
    generation = meta.get("generation")
    conditions = status.get("conditions")
    try:
        md = ModelDeployment.model_validate(dict(body))
    except ValidationError as exc:
        patch.status["conditions"] = merged(
            conditions, condition("Ready", False, "InvalidSpec", str(exc), generation)
        )
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    patch.status["observedGeneration"] = generation
    patch.status["engine"] = md.spec.engine
    if md.spec.llamacpp is not None:
        source = md.spec.llamacpp.model
        patch.status["model"] = source.url or (source.pvc.path if source.pvc else None)
        ensure_server_key(md, body)
        children = [render_deployment(md), render_service(md)]
        if settings.current().model_network_policy:
            children.append(render_network_policy(md, settings.current().namespace))
        kopf.adopt(children, owner=body)
        for child in children:
            kube.apply(child)
        patch.status["endpoint"] = (
            f"http://{md.metadata.name}.{md.metadata.namespace}.svc:{LLAMACPP_PORT}/v1"
        )
        logger.info("applied %s %s", ", ".join(c["kind"] for c in children), md.metadata.name)
        # The gateway's copy of the server key is made by the compiler.
        request_compile()
        return
    ext = md.spec.external
    assert ext is not None
    patch.status["model"] = ext.model
    patch.status["endpoint"] = ext.base_url
    ref = ext.api_key_secret_ref
    if ref is not None:
        secret = kube.get("v1", "Secret", ref.name, md.metadata.namespace)
        if secret is None or ref.key not in (secret.get("data") or {}):
            message = f"Secret {ref.name} with key {ref.key} not found"
            patch.status["conditions"] = merged(
                conditions, condition("Ready", False, "SecretNotFound", message, generation)
            )
            # Not permanent: the Secret may be created later.
            raise kopf.TemporaryError(message, delay=30)
    patch.status["conditions"] = merged(
        conditions, condition("Ready", True, "Configured", "", generation)
    )


def ensure_server_key(md: ModelDeployment, body: kopf.Body) -> None:
    """The key the model's llama-servers require, made once: a new key on every reconcile
    would restart the servers and refuse the gateway until its copy caught up."""
    name = server_key_secret_name(md.metadata.name)
    found = kube.get("v1", "Secret", name, md.metadata.namespace)
    if found is not None and SERVER_KEY in (found.get("data") or {}):
        try:
            base64.b64decode(found["data"][SERVER_KEY], validate=True).decode()
            return
        except ValueError:
            pass  # unreadable: replaced below
    secret = render_server_key_secret(md, generate_api_key())
    kopf.adopt(secret, owner=body)
    kube.apply(secret)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED_BY)
def deployment_changed(body: kopf.Body, **_: Any) -> None:
    """The owner's readiness follows its Deployment's."""
    owner = next(
        (
            ref
            for ref in body.metadata.get("ownerReferences", [])
            if ref.get("kind") == "ModelDeployment"
        ),
        None,
    )
    if owner is None:
        return
    status = body.get("status", {})
    ready = int(status.get("readyReplicas") or 0)
    wanted = int(body.spec.get("replicas") or 0)
    ok = ready >= wanted and wanted > 0
    reason = "Available" if ok else ("ScaledToZero" if wanted == 0 else "Progressing")
    namespace = body.metadata["namespace"]
    current = kube.get(f"{GROUP}/{VERSION}", "ModelDeployment", owner["name"], namespace)
    if current is None:
        return
    old = current.get("status") or {}
    conditions = merged(
        old.get("conditions"),
        condition("Ready", ok, reason, f"{ready}/{wanted} replicas ready"),
    )
    if old.get("readyReplicas") == ready and old.get("conditions") == conditions:
        return  # every status write is an event: none for nothing
    kube.patch_status(
        f"{GROUP}/{VERSION}",
        "ModelDeployment",
        owner["name"],
        namespace,
        {"readyReplicas": ready, "conditions": conditions},
    )
