"""The real API server validates SLAPolicy objects with the generated CRD's CEL rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.kube_fixtures import admin_client, control_plane
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e


def create(cp: ControlPlane, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """As the cluster's admin: an operator test may have left the default client as the
    operator's ServiceAccount, which may not create policies."""
    body = {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "SLAPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    result = client.CustomObjectsApi(admin_client(cp)).create_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", "default", "slapolicies", body
    )
    assert isinstance(result, dict)
    return result


AVAILABILITY = {"name": "availability", "type": "availability", "target": "99.9"}


def latency(threshold: str) -> dict[str, Any]:
    return {"name": "latency", "type": "latency", "percentile": 95, "threshold": threshold}


def test_a_valid_policy_is_stored_with_defaults(control_plane: ControlPlane) -> None:
    stored = create(
        control_plane,
        "ok",
        {
            "tenant": "acme",
            "objectives": [AVAILABILITY, latency("2000ms"), {**latency("7.5s"), "name": "l2"}],
            "ruleLabels": {"release": "kube-prometheus-stack"},
        },
    )
    assert stored["spec"]["objectives"][1]["threshold"] == "2000ms"
    # Printer columns name the fields the status will carry.
    crds = client.ApiextensionsV1Api(admin_client(control_plane))
    crd = crds.read_custom_resource_definition("slapolicies.llmrouter.io")
    columns = [c.name for c in crd.spec.versions[0].additional_printer_columns or []]
    assert columns[:4] == ["Tenant", "Window", "Compliant", "Budget"]


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (
            "not-a-bucket",
            {"tenant": "acme", "objectives": [latency("1.9s")]},
            "threshold must be a histogram bucket boundary: one of 25ms, 50ms, 100ms",
        ),
        (
            "latency-with-target",
            {"tenant": "acme", "objectives": [{**latency("2s"), "target": "99"}]},
            "a latency or ttft objective takes percentile and threshold, not target",
        ),
        (
            "availability-without-target",
            {"tenant": "acme", "objectives": [{"name": "a", "type": "availability"}]},
            "an availability objective takes target, not percentile or threshold",
        ),
        (
            "duplicate",
            {"tenant": "acme", "objectives": [AVAILABILITY, AVAILABILITY]},
            "Duplicate value",
        ),
        (
            "window",
            {"tenant": "acme", "window": "7d", "objectives": [AVAILABILITY]},
            'spec.window: Unsupported value: "7d"',
        ),
        (
            "hundred",
            {"tenant": "acme", "objectives": [{**AVAILABILITY, "target": "100"}]},
            "spec.objectives[0].target",
        ),
    ],
)
def test_invalid_policies_are_refused_with_readable_messages(
    control_plane: ControlPlane, name: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as err:
        create(control_plane, name, spec)
    assert err.value.status == 422
    assert message in json.loads(err.value.body or "{}")["message"]
