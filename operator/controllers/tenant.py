"""Tenant → one Secret per API key: generated, rotated on request, removed with its entry."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.operator import kube
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.tenant import Tenant
from llmrouter.operator.apikeys import fingerprint, generate_api_key
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition
from llmrouter.operator.render import (
    API_KEY_LABEL,
    TENANT_LABEL,
    api_key_secret_name,
    render_api_key_secret,
)

ROTATE_ANNOTATION = "llmrouter.io/rotate-keys"
"""Comma-separated key names to regenerate; each value is acted on once."""
ROTATED_ANNOTATION = "llmrouter.io/rotated"


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants", field="spec")
@kopf.on.update(GROUP, VERSION, "tenants", field=("metadata", "annotations", ROTATE_ANNOTATION))
def reconcile(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: Any, **_: Any) -> None:
    try:
        tenant = Tenant.model_validate(dict(body))
    except ValidationError as exc:
        patch.status["conditions"] = [
            condition("Ready", False, "InvalidSpec", str(exc), meta.get("generation"))
        ]
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    name, namespace = tenant.metadata.name, tenant.metadata.namespace
    existing = {
        s["metadata"]["labels"][API_KEY_LABEL]: s
        for s in kube.list_objects(
            "v1", "Secret", namespace, f"{TENANT_LABEL}={name},{API_KEY_LABEL}"
        )
    }
    rotate = {k.strip() for k in meta.get("annotations", {}).get(ROTATE_ANNOTATION, "").split(",")}
    statuses = []
    for key in tenant.spec.api_keys:
        secret = existing.get(key.name)
        if secret is None or key.name in rotate:
            value = generate_api_key()
            secret = render_api_key_secret(namespace, name, key.name, value)
            kopf.adopt(secret, owner=body)
            secret = kube.apply(secret)
            logger.info("API key %s %s", key.name, "rotated" if key.name in rotate else "created")
        else:
            value = base64.b64decode(secret["data"]["apiKey"]).decode()
        statuses.append(
            {
                "name": key.name,
                "secretName": api_key_secret_name(name, key.name),
                "fingerprint": fingerprint(value),
                "createdAt": secret["metadata"].get("creationTimestamp")
                or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    wanted = {k.name for k in tenant.spec.api_keys}
    for key_name, secret in existing.items():
        if key_name not in wanted:
            kube.delete("v1", "Secret", secret["metadata"]["name"], namespace)
            logger.info("API key %s revoked", key_name)
    patch.status["apiKeys"] = statuses
    patch.status["observedGeneration"] = meta.get("generation")
    patch.status.setdefault(
        "conditions", [condition("Ready", True, "KeysReconciled", "", meta.get("generation"))]
    )
    if rotate - {""}:
        patch.metadata.setdefault("annotations", {})[ROTATE_ANNOTATION] = None
    request_compile()
