"""The few Kubernetes API calls the operator makes, through one dynamic client."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

from kubernetes import client, config
from kubernetes.config import kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

FIELD_MANAGER = "llmrouter-operator"


def dynamic() -> DynamicClient:
    """One client per cluster configuration: a process whose kubeconfig changed (an operator
    started again against another cluster, as tests do) gets a client for the new one."""
    return _dynamic(os.environ.get("KUBECONFIG", ""), kube_config.KUBE_CONFIG_DEFAULT_LOCATION)


@functools.lru_cache(maxsize=4)
def _dynamic(kubeconfig: str, default_location: str) -> DynamicClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return DynamicClient(client.ApiClient())


def _resource(api_version: str, kind: str) -> Any:
    return dynamic().resources.get(api_version=api_version, kind=kind)


def apply(obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply: idempotent, and it leaves fields other managers own alone."""
    meta = obj["metadata"]
    result = dynamic().server_side_apply(
        _resource(obj["apiVersion"], obj["kind"]),
        body=obj,
        name=meta["name"],
        namespace=meta.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )
    out: dict[str, Any] = result.to_dict()
    return out


def get(api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = (
            dynamic().get(_resource(api_version, kind), name=name, namespace=namespace).to_dict()
        )
    except NotFoundError:
        return None
    return found


def list_objects(
    api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
) -> list[dict[str, Any]]:
    found = dynamic().get(
        _resource(api_version, kind), namespace=namespace, label_selector=label_selector
    )
    items: list[dict[str, Any]] = found.to_dict().get("items", [])
    return items


def list_if_served(api_version: str, kind: str) -> list[dict[str, Any]]:
    """Like list_objects, but a kind the API server does not serve has no objects, which
    is true: its CRD is not installed (`helm upgrade` leaves a chart's crds/ alone)."""
    try:
        return list_objects(api_version, kind)
    except ResourceNotFoundError:
        return []


def delete(api_version: str, kind: str, name: str, namespace: str) -> None:
    with contextlib.suppress(NotFoundError):
        dynamic().delete(_resource(api_version, kind), name=name, namespace=namespace)


def patch_status(
    api_version: str,
    kind: str,
    name: str,
    namespace: str,
    status: dict[str, Any],
    resource_version: str | None = None,
) -> None:
    """A merge patch of the status; with ``resource_version``, only if the object has not
    changed since it was read (else 409 Conflict): lists such as conditions are replaced
    whole, so writing from an old read would drop what another writer set since."""
    resource = _resource(api_version, kind).subresources["status"]
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    dynamic().patch(
        resource,
        body=body,
        name=name,
        namespace=namespace,
        content_type="application/merge-patch+json",
    )
