"""The test control plane (tests/support/kube.py) is a real one: the API answers, a
Deployment gets Ready pods on the kwok node, deleting it garbage-collects what it owns, and
our CRDs install and make the API server refuse invalid objects with readable messages.

Builds the binaries first when they are missing (hack/build-kube.sh: long, once)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.kube import ControlPlane, build

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NS = "default"


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane(build()) as plane:
        yield plane


@pytest.fixture(scope="module")
def api(cp: ControlPlane) -> client.ApiClient:
    """A client of its own: the kubernetes package's global configuration is left alone."""
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(cp.kubeconfig)
    )
    return api_client


def plain(obj: Any) -> Any:
    """An object of the client as the API server writes it (camelCase keys)."""
    return obj.to_dict(serialize=True)


def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout_s}s: {what} (last: {result!r})")
        time.sleep(0.2)


def test_the_api_answers(api: client.ApiClient) -> None:
    namespaces = plain(client.CoreV1Api(api).list_namespace())["items"]
    names = {ns["metadata"]["name"] for ns in namespaces}
    assert {"default", "kube-system"} <= names
    # hack/build-kube.sh stamps the real version in, as Kubernetes' own build does.
    assert re.fullmatch(r"v1\.\d+\.\d+", client.VersionApi(api).get_code().git_version)


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(name="server", image="example.invalid/none:1")
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )


def test_deployment_gets_ready_replicas_on_the_fake_node(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(NS, deployment("ready", 2))

    def ready() -> int:
        status = plain(apps.read_namespaced_deployment("ready", NS))["status"] or {}
        return int(status.get("readyReplicas") or 0)

    eventually(lambda: ready() == 2, 60, "2 ready replicas")
    pods = plain(core.list_namespaced_pod(NS, label_selector="app=ready"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {"kwok-node-0"}
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)
    apps.delete_namespaced_deployment("ready", NS)


def test_deleting_a_deployment_collects_its_replicaset_and_pods(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    created = plain(apps.create_namespaced_deployment(NS, deployment("cascade", 2)))
    selector = "app=cascade"

    def pods() -> list[Any]:
        return list(plain(core.list_namespaced_pod(NS, label_selector=selector))["items"])

    def replica_sets() -> list[Any]:
        return list(plain(apps.list_namespaced_replica_set(NS, label_selector=selector))["items"])

    def owners(obj: Any) -> set[str]:
        return {o["uid"] for o in obj["metadata"].get("ownerReferences") or []}

    eventually(lambda: len(pods()) == 2, 60, "2 pods")
    (rs,) = replica_sets()
    assert owners(rs) == {created["metadata"]["uid"]}
    assert [owners(p) for p in pods()] == [{rs["metadata"]["uid"]}] * 2

    apps.delete_namespaced_deployment("cascade", NS)  # background propagation: the GC's job
    eventually(lambda: not replica_sets() and not pods(), 60, "ReplicaSet and pods collected")


@pytest.fixture(scope="module")
def crds(api: client.ApiClient) -> list[str]:
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        ext.create_custom_resource_definition(crd)
        names.append(crd["metadata"]["name"])

    def established(name: str) -> bool:
        status = plain(ext.read_custom_resource_definition(name))["status"] or {}
        conditions = status.get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    eventually(lambda: all(established(n) for n in names), 30, f"{names} Established")
    return names


def create_model(api: client.ApiClient, name: str, spec: dict[str, Any]) -> Any:
    body = {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NS, "modeldeployments", body
    )


LLAMA = {"model": {"url": "https://example.invalid/tiny.gguf"}, "parallel": 4}
EXTERNAL = {"provider": "openai", "baseURL": "https://api.openai.com/v1", "model": "gpt-4o"}


def test_crds_install_and_accept_a_valid_object(api: client.ApiClient, crds: list[str]) -> None:
    assert "modeldeployments.llmrouter.io" in crds
    created = create_model(api, "valid", {"llamacpp": LLAMA})
    assert created["spec"]["llamacpp"]["parallel"] == 4


@pytest.mark.parametrize(
    ("name", "spec", "messages"),
    [
        (
            "both",
            {"llamacpp": LLAMA, "external": EXTERNAL},
            ["exactly one of llamacpp or external"],
        ),
        (
            "no-slots",
            {"llamacpp": {**LLAMA, "parallel": 0}},
            ["spec.llamacpp.parallel", "greater than or equal to 1"],
        ),
    ],
)
def test_invalid_model_deployments_are_refused_with_readable_messages(
    api: client.ApiClient, crds: list[str], name: str, spec: dict[str, Any], messages: list[str]
) -> None:
    with pytest.raises(ApiException) as err:
        create_model(api, name, spec)
    assert err.value.status == 422
    message = json.loads(err.value.body or "{}")["message"]
    for expected in messages:
        assert expected in message
