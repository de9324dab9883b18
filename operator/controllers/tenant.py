"""Tenant → one Secret per API key: generated, rotated on request, removed with its entry."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.gateway.config import hash_api_key
from llmrouter.operator import audit, kube, settings
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.api.tenant import Tenant
from llmrouter.operator.apikeys import fingerprint, generate_api_key
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition, merged
from llmrouter.operator.names import label_value
from llmrouter.operator.render import (
    API_KEY_LABEL,
    PREVIOUS_KEY_ANNOTATION,
    PREVIOUS_KEY_UNTIL_ANNOTATION,
    TENANT_LABEL,
    render_api_key_secret,
)

ROTATE_ANNOTATION = "llmrouter.io/rotate-keys"
"""Comma-separated key names to regenerate. Each value is acted on once and left in place
(GitOps tools put back an annotation the operator deletes, rotating keys on every sync):
to rotate again, change the value, e.g. add a date: ``ci-bot,2026-06-01``."""
HANDLED_ANNOTATION = "llmrouter.io/rotated-for"
"""On a key Secret: the rotate-keys value it was made for."""


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants", field="spec")
@kopf.on.update(GROUP, VERSION, "tenants", field=("metadata", "annotations", ROTATE_ANNOTATION))
def reconcile(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    generation = meta.get("generation")
    try:
        tenant = Tenant.model_validate(dict(body))
    except ValidationError as exc:
        patch.status["conditions"] = merged(
            status.get("conditions"),
            condition("Ready", False, "InvalidSpec", str(exc), generation),
        )
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    name, namespace = tenant.metadata.name, tenant.metadata.namespace
    existing = {
        s["metadata"]["labels"][API_KEY_LABEL]: s
        for s in kube.list_objects(
            "v1", "Secret", namespace, f"{TENANT_LABEL}={label_value(name)},{API_KEY_LABEL}"
        )
    }
    request = meta.get("annotations", {}).get(ROTATE_ANNOTATION, "")
    rotate = {k.strip() for k in request.split(",")} - {""}
    statuses = []
    for key in tenant.spec.api_keys:
        secret = existing.get(key.name)
        handled = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(
            HANDLED_ANNOTATION
        )
        value = _readable_key(secret)
        rotating = secret is not None and key.name in rotate and handled != request
        if value is None or rotating:
            previous, value = value, generate_api_key()
            new = render_api_key_secret(namespace, name, key.name, value)
            new["metadata"]["annotations"] = {HANDLED_ANNOTATION: request}
            overlap = settings.current().rotation_overlap_s
            if rotating and previous is not None and overlap > 0:
                until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=overlap)
                new["metadata"]["annotations"] |= {
                    PREVIOUS_KEY_ANNOTATION: hash_api_key(previous),
                    PREVIOUS_KEY_UNTIL_ANNOTATION: until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            if secret is not None:
                # Same Secret, new key: a second Secret would leave two keys of one name.
                new["metadata"]["name"] = secret["metadata"]["name"]
            kopf.adopt(new, owner=body)
            what = "rotated" if rotating else ("created" if secret is None else "repaired")
            audit.key_event(what, f"{namespace}/{name}", key.name, fingerprint(value))
            secret = kube.apply(new)
            logger.info("API key %s %s", key.name, what)
        assert secret is not None
        statuses.append(
            {
                "name": key.name,
                # Secrets made before names were hashed keep their name, and their key.
                "secretName": secret["metadata"]["name"],
                "fingerprint": fingerprint(value),
                "createdAt": secret["metadata"].get("creationTimestamp")
                or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    wanted = {k.name for k in tenant.spec.api_keys}
    for key_name, secret in existing.items():
        if key_name not in wanted:
            audit.key_event("revoked", f"{namespace}/{name}", key_name)
            kube.delete("v1", "Secret", secret["metadata"]["name"], namespace)
            logger.info("API key %s revoked", key_name)
    patch.status["apiKeys"] = statuses
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = merged(
        status.get("conditions"), condition("Ready", True, "KeysReconciled", "", generation)
    )
    request_compile()


def _readable_key(secret: dict[str, Any] | None) -> str | None:
    try:
        return base64.b64decode((secret or {})["data"]["apiKey"], validate=True).decode()
    except (KeyError, TypeError, ValueError):
        return None
