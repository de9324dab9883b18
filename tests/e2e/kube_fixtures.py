"""Session fixtures for tests against the real control plane."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from tests.support.kube import ControlPlane, build

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(build()) as cp:
        config.load_kube_config(str(cp.kubeconfig))
        install_crds(admin_client(cp))
        yield cp


def admin_client(cp: ControlPlane) -> client.ApiClient:
    api_client: client.ApiClient = config.new_client_from_config(str(cp.kubeconfig))
    return api_client


def wait_established(api: client.ApiextensionsV1Api, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = api.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} not established")


def install_crds(api_client: client.ApiClient) -> None:
    api = client.ApiextensionsV1Api(api_client)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        api.create_custom_resource_definition(crd)
        wait_established(api, crd["metadata"]["name"])


def helm_template(namespace: str, *values: str) -> list[dict[str, Any]]:
    """The chart's objects; ``values`` are ``--set`` assignments."""
    helm = subprocess.run(
        [str(REPO / "hack" / "build-helm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    rendered = subprocess.run(
        [
            helm,
            "template",
            "llmrouter",
            str(REPO / "charts" / "llmrouter"),
            "--namespace",
            namespace,
            "--include-crds",
            *(arg for value in values for arg in ("--set", value)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def install_chart(api_client: client.ApiClient, namespace: str) -> None:
    """What `helm install` would create, applied server-side in dependency order."""
    dyn = DynamicClient(api_client)
    docs = helm_template(namespace)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for doc in crds + [d for d in docs if d not in crds]:
        if doc["kind"] == "ClusterKopfPeering":
            wait_established(client.ApiextensionsV1Api(api_client), "clusterkopfpeerings.kopf.dev")
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        dyn.server_side_apply(
            resource,
            body=doc,
            name=doc["metadata"]["name"],
            namespace=doc["metadata"].get("namespace"),
            field_manager="helm",
            force_conflicts=True,
        )


def service_account_kubeconfig(
    cp: ControlPlane, api_client: client.ApiClient, namespace: str, name: str
) -> Path:
    """A kubeconfig holding a token of the ServiceAccount, and nothing more."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    status = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(name, namespace, request)
        .status
    )
    assert status is not None
    token = status.token
    path = cp.dir / f"kubeconfig-{name}"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{cp.server}", certificate-authority: "{cp.dir}/ca.crt"}}
users:
- name: {name}
  user: {{token: "{token}"}}
contexts:
- name: test
  context: {{cluster: test, user: {name}}}
current-context: test
""")
    return path


def eventually(check: Any, timeout_s: float = 30, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"not true after {timeout_s}s: {last!r}")
