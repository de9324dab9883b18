"""The chart's ValidatingAdmissionPolicy, applied to the real API server: a ModelDeployment
may run only the allowed images, and its extraArgs cannot undo what the operator sets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.kube_fixtures import admin_client, control_plane, helm_template, install_chart
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
NS = "admission"
POLICY = "ValidatingAdmissionPolicy 'llmrouter-model-servers'"


def model(name: str, **llamacpp: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"llamacpp": {"model": {"url": "https://example.com/m.gguf"}, **llamacpp}},
    }


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[client.CustomObjectsApi]:
    admin = admin_client(control_plane)
    core = client.CoreV1Api(admin)
    for name in ("llmrouter", NS):
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except ApiException as exc:
            if exc.status != 409:  # another module made it
                raise
    install_chart(admin, "llmrouter")
    api = client.CustomObjectsApi(admin)
    yield api
    # Operators of later modules would run what these tests admitted.
    api.delete_collection_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NS, "modeldeployments"
    )


def refusal(api: client.CustomObjectsApi, body: dict[str, Any]) -> str:
    """The API server's message refusing ``body``; the policy takes a moment to be loaded."""
    deadline = time.monotonic() + 30
    while True:
        try:
            api.create_namespaced_custom_object(
                "llmrouter.io", "v1alpha1", NS, "modeldeployments", body
            )
        except ApiException as exc:
            assert exc.status == 403, exc.body
            message: str = json.loads(exc.body or "{}")["message"]
            return message
        api.delete_namespaced_custom_object(
            "llmrouter.io", "v1alpha1", NS, "modeldeployments", body["metadata"]["name"]
        )
        assert time.monotonic() < deadline, f"{body['metadata']['name']} was admitted"
        time.sleep(0.5)


def test_an_image_not_allowed_is_refused(api: client.CustomObjectsApi) -> None:
    message = refusal(api, model("miner", image="docker.io/attacker/miner:latest"))
    assert POLICY in message
    assert "spec.llamacpp.image is not allowed here" in message
    assert "ghcr.io/ggml-org/llama.cpp:server" in message
    # The prefix names one repository: a look-alike next to it is not in it.
    message = refusal(api, model("lookalike", image="ghcr.io/ggml-org/llama.cpp.evil:server"))
    assert "spec.llamacpp.image is not allowed here" in message


@pytest.mark.parametrize("arg", ["--api-key", "--host=0.0.0.0", "-m", "--port"])
def test_extra_args_cannot_override_what_the_operator_sets(
    api: client.CustomObjectsApi, arg: str
) -> None:
    name = "args-" + arg.strip("-").split("=")[0].replace("-", "")
    message = refusal(api, model(name, extraArgs=["--threads", "4", arg, "x"]))
    assert POLICY in message
    assert "spec.llamacpp.extraArgs may not set what the operator sets" in message


def test_an_allowed_image_and_args_are_accepted(api: client.CustomObjectsApi) -> None:
    refusal(api, model("warm-up", image="docker.io/attacker/miner:latest"))  # policy loaded
    for name, spec in (
        ("default-image", {}),
        ("cuda", {"image": "ghcr.io/ggml-org/llama.cpp:server-cuda", "extraArgs": ["-t", "8"]}),
        ("pinned", {"image": "ghcr.io/ggml-org/llama.cpp@sha256:" + "a" * 64}),
    ):
        api.create_namespaced_custom_object(
            "llmrouter.io", "v1alpha1", NS, "modeldeployments", model(name, **spec)
        )
    # Metadata changes (the operator's finalizers and annotations) are not checked again.
    api.patch_namespaced_custom_object(
        "llmrouter.io",
        "v1alpha1",
        NS,
        "modeldeployments",
        "cuda",
        {"metadata": {"annotations": {"example.com/touched": "yes"}}},
    )


def test_the_policy_is_on_by_default_and_can_be_turned_off() -> None:
    kinds = {d["kind"] for d in helm_template("gw")}
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    off = {d["kind"] for d in helm_template("gw", "modelServers.admissionPolicy.enabled=false")}
    assert not {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} & off
    allowed = helm_template(
        "gw", "modelServers.admissionPolicy.allowedImages={registry.example.com/llama/}"
    )
    [policy] = [d for d in allowed if d["kind"] == "ValidatingAdmissionPolicy"]
    assert '["registry.example.com/llama/"]' in policy["spec"]["validations"][0]["expression"]
