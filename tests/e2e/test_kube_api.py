"""The real API server: our CRDs validate what `kubectl apply` sends; Deployments get
Ready pods on the kwok node; deletion cascades through ownerReferences."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.kube_fixtures import control_plane, eventually
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e


def model(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


LLAMA = {"model": {"url": "https://example.com/m.gguf"}}
EXTERNAL = {"provider": "openai", "baseURL": "https://api.openai.com/v1", "model": "gpt"}


def create(body: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    plural = body["kind"].lower() + "s"
    result = client.CustomObjectsApi().create_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", namespace, plural, body
    )
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (
            "both",
            {"llamacpp": LLAMA, "external": EXTERNAL},
            "a ModelDeployment needs exactly one of llamacpp or external",
        ),
        (
            "zero-slots",
            {"llamacpp": {**LLAMA, "parallel": 0}},
            "spec.llamacpp.parallel: Invalid value: 0",
        ),
        (
            "bad-provider",
            {"external": {**EXTERNAL, "provider": "cohere"}},
            'spec.external.provider: Unsupported value: "cohere"',
        ),
        (
            "bad-duration",
            {"external": EXTERNAL, "timeouts": {"total": "10 seconds"}},
            "spec.timeouts.total",
        ),
        (
            "azure",
            {"external": {**EXTERNAL, "provider": "azure-openai"}},
            "provider azure-openai needs apiVersion",
        ),
        (
            "self-fallback",
            {"external": EXTERNAL, "aliases": ["fast"], "fallbacks": ["fast"]},
            "a model cannot fall back to itself: one of its own names is in fallbacks",
        ),
        (
            "twice",
            {"external": EXTERNAL, "aliases": ["fast", "fast"]},
            'spec.aliases[1]: Duplicate value: "fast"',
        ),
        (
            "key-over-http",
            {
                "external": {
                    **EXTERNAL,
                    "baseURL": "http://api.example.com/v1",
                    "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                }
            },
            "apiKeySecretRef needs an https baseURL",
        ),
        (
            "model-over-http",
            {"llamacpp": {"model": {"url": "http://mirror.example/m.gguf"}}},
            "a model url over plain http needs sha256",
        ),
    ],
)
def test_invalid_model_deployments_are_refused_with_readable_messages(
    control_plane: ControlPlane, name: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as err:
        create(model(name, spec))
    assert err.value.status == 422
    assert message in json.loads(err.value.body or "{}")["message"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"models": ["a"], "limits": {"requestsPerMinute": -1}},
            "spec.limits.requestsPerMinute: Invalid value: -1",
        ),
        ({"models": ["a"], "budget": {"monthlyUSD": "0"}}, "monthlyUSD must be greater than zero"),
        ({"models": []}, "spec.models: Invalid value"),
        (
            {"models": ["a"], "apiKeys": [{"name": "k", "role": "root"}]},
            'spec.apiKeys[0].role: Unsupported value: "root"',
        ),
    ],
)
def test_invalid_tenants_are_refused(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    body = {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    with pytest.raises(ApiException) as err:
        create(body)
    assert err.value.status == 422
    assert message in json.loads(err.value.body or "{}")["message"]


def ready_replicas(apps: client.AppsV1Api, name: str) -> int:
    status = apps.read_namespaced_deployment(name, "default").status
    return int(status.ready_replicas or 0) if status else 0


def test_deployment_pods_become_ready_and_deletion_cascades(control_plane: ControlPlane) -> None:
    apps = client.AppsV1Api()
    labels = {"app": "probe"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="probe"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="c",
                            image="example.invalid/none:1",
                            resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
                        )
                    ]
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", deployment)
    eventually(lambda: ready_replicas(apps, "probe") == 2, 60)
    apps.delete_namespaced_deployment("probe", "default")
    core = client.CoreV1Api()
    eventually(
        lambda: (
            not core.list_namespaced_pod("default", label_selector="app=probe").items
            and not apps.list_namespaced_replica_set("default", label_selector="app=probe").items
        ),
        60,
    )
