"""ModelDeployment → a llama-server Deployment and Service, or a checked external provider."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.operator import kube
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.compile import LLAMACPP_PORT
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition
from llmrouter.operator.render import MANAGED_BY, render_deployment, render_service


@kopf.on.resume(GROUP, VERSION, "modeldeployments")
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
def reconcile(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: Any, **_: Any) -> None:
    request_compile()
    try:
        md = ModelDeployment.model_validate(dict(body))
    except ValidationError as exc:
        patch.status["conditions"] = [
            condition("Ready", False, "InvalidSpec", str(exc), meta.get("generation"))
        ]
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    generation = meta.get("generation")
    patch.status["observedGeneration"] = generation
    patch.status["engine"] = md.spec.engine
    if md.spec.llamacpp is not None:
        source = md.spec.llamacpp.model
        patch.status["model"] = source.url or (source.pvc.path if source.pvc else None)
        children = [render_deployment(md), render_service(md)]
        kopf.adopt(children, owner=body)
        for child in children:
            kube.apply(child)
        patch.status["endpoint"] = (
            f"http://{md.metadata.name}.{md.metadata.namespace}.svc:{LLAMACPP_PORT}/v1"
        )
        logger.info("applied Deployment and Service %s", md.metadata.name)
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
            patch.status["conditions"] = [
                condition("Ready", False, "SecretNotFound", message, generation)
            ]
            # Not permanent: the Secret may be created later.
            raise kopf.TemporaryError(message, delay=30)
    patch.status["conditions"] = [condition("Ready", True, "Configured", "", generation)]


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
    kube.patch_status(
        f"{GROUP}/{VERSION}",
        "ModelDeployment",
        owner["name"],
        body.metadata["namespace"],
        {
            "readyReplicas": ready,
            "conditions": [condition("Ready", ok, reason, f"{ready}/{wanted} replicas ready")],
        },
    )
