"""Two operator replicas, as `operator.replicas: 2` runs them: one works, the other stands
by, and takes over when the first dies without a word."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from llmrouter.gateway.config import hash_api_key
from llmrouter.operator.names import api_key_secret_name
from llmrouter.operator.peering import PEERING_LIFETIME_S
from tests.e2e.kube_fixtures import (
    admin_client,
    control_plane,
    eventually,
    install_chart,
    service_account_kubeconfig,
)
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
GROUP, VERSION = "llmrouter.io", "v1alpha1"
NAMESPACE = "failover"


class Replica:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "llmrouter"), "operator"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> client.ApiClient:
    admin = admin_client(control_plane)
    core = client.CoreV1Api(admin)
    names = [ns.metadata.name for ns in core.list_namespace().items if ns.metadata]
    if "llmrouter" not in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="llmrouter")))
        install_chart(admin, "llmrouter")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    return admin


@pytest.fixture
def replicas(
    control_plane: ControlPlane, api: client.ApiClient, tmp_path: Path
) -> Iterator[list[Replica]]:
    kubeconfig = service_account_kubeconfig(control_plane, api, "llmrouter", "llmrouter-operator")
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONSAFEPATH": "1",
        "LLMROUTER_NAMESPACE": "llmrouter",
        "LLMROUTER_STATE_URL": "",
    }
    first = Replica(env, tmp_path / "first.log")
    eventually(lambda: len(peers(api)) == 1, 30)
    time.sleep(1.1)  # started in a later second: the lower priority, so it stands by
    second = Replica(env, tmp_path / "second.log")
    eventually(lambda: len(peers(api)) == 2, 30)
    started = [first, second]
    yield started
    for replica in started:
        replica.stop()


def peers(api: client.ApiClient) -> dict[str, Any]:
    """The replicas alive in the chart's peering object."""
    peering = client.CustomObjectsApi(api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "llmrouter"
    )
    found: dict[str, Any] = (peering.get("status") or {}) if isinstance(peering, dict) else {}
    return {k: v for k, v in found.items() if v}


def create_tenant(api: client.ApiClient, name: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"models": ["*"], "apiKeys": [{"name": "k"}]},
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "tenants", body
    )


def key_of(api: client.ApiClient, tenant: str) -> str | None:
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            api_key_secret_name(tenant, "k"), NAMESPACE
        )
    except client.exceptions.ApiException:
        return None
    return base64.b64decode((secret.data or {})["apiKey"]).decode()


def published_keys(api: client.ApiClient) -> dict[str, Any]:
    secret = client.CoreV1Api(api).read_namespaced_secret("llmrouter-gateway-config", "llmrouter")
    keys: dict[str, Any] = json.loads(base64.b64decode((secret.data or {})["config.json"]))[
        "api_keys"
    ]
    return keys


def test_the_standby_takes_over_when_the_active_replica_dies(
    api: client.ApiClient, replicas: list[Replica]
) -> None:
    first, second = replicas
    eventually(lambda: "Pausing operations in favour of" in second.text(), 30)
    create_tenant(api, "before")
    key = eventually(lambda: key_of(api, "before"), 30)
    eventually(lambda: hash_api_key(key) in published_keys(api), 30)
    assert "API key k created" in first.text()
    assert "API key k created" not in second.text()

    first.proc.kill()  # no goodbye: the standby only learns from the missing keep-alives
    killed = time.monotonic()
    create_tenant(api, "after")
    key = eventually(lambda: key_of(api, "after"), PEERING_LIFETIME_S + 30)
    eventually(lambda: hash_api_key(key) in published_keys(api), 30)
    took = time.monotonic() - killed
    assert took < PEERING_LIFETIME_S + 15, took
    assert "API key k created" in second.text()
