"""The chart's values schema, security contexts, image digest and disruption budgets, as a
real `helm` renders and lints them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmrouter.operator.render import GATEWAY_SELECTOR
from tests.e2e.kube_fixtures import helm_template

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/llmrouter"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _helm() -> str:
    return subprocess.run(
        [str(REPO / "hack/build-helm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def _refused(*values: str) -> str:
    with pytest.raises(subprocess.CalledProcessError) as err:
        helm_template("ns", *values)
    stderr: str = err.value.stderr
    assert "values don't meet the specifications of the schema" in stderr, stderr
    return stderr


def test_helm_lint_passes() -> None:
    out = subprocess.run(
        [_helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("image.digest=sha256:abc", "at '/image/digest': 'sha256:abc' does not match pattern"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("image.repository=Not A Name", "at '/image/repository'"),
        ("gatway.replicas=2", "additional properties 'gatway' not allowed"),
        ("operator.replicas=0", "at '/operator/replicas': minimum: got 0, want 1"),
        ("operator.prometheusURL=prometheus:9090", "at '/operator/prometheusURL'"),
        ("operator.resources.requests.memory=lots", "'lots' does not match pattern"),
        ("operator.resources.request.cpu=1", "additional properties 'request' not allowed"),
        ("gateway.replicas=-1", "at '/gateway/replicas': minimum: got -1, want 0"),
        ("gateway.stateURL=http://redis:6379", "at '/gateway/stateURL'"),
        ("modelServers.networkPolicy=maybe", "at '/modelServers/networkPolicy': got string"),
        ("configSecret=Not_A_Name", "at '/configSecret'"),
        ("podDisruptionBudget.gateway.minAvailable=half", "'half' does not match pattern"),
    ],
)
def test_bad_values_are_refused_with_the_schema_message(value: str, message: str) -> None:
    assert message in _refused(value)


def _pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]


def test_every_pod_runs_locked_down() -> None:
    from tests.unit.test_image_facts import oci_image  # the image's own user

    pods = _pods(helm_template("ns", "operator.replicas=2"))
    assert pods
    for pod in pods:
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["runAsUser"] == oci_image.UID
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert "emptyDir" in tmp
        for container in pod["containers"]:
            sec = container["securityContext"]
            assert sec["readOnlyRootFilesystem"] is True
            assert sec["allowPrivilegeEscalation"] is False
            assert sec["capabilities"] == {"drop": ["ALL"]}
            assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]


def test_image_digest_pins_operator_and_gateways() -> None:
    (pod,) = _pods(helm_template("ns", f"image.digest={DIGEST}"))
    container = pod["containers"][0]
    image = f"ghcr.io/llmrouter/llmrouter@{DIGEST}"
    assert container["image"] == image
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LLMROUTER_GATEWAY_IMAGE"] == image
    (tagged,) = _pods(helm_template("ns"))
    assert tagged["containers"][0]["image"] == "ghcr.io/llmrouter/llmrouter:0.1.0"


def _budgets(*values: str) -> dict[str, dict[str, Any]]:
    docs = helm_template("ns", *values)
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}


def test_disruption_budgets() -> None:
    budgets = _budgets()
    # The gateway pods are the operator's Deployment: the budget selects its labels.
    assert set(budgets) == {"llmrouter-gateway"}
    gateway = budgets["llmrouter-gateway"]
    assert gateway["spec"]["selector"]["matchLabels"] == GATEWAY_SELECTOR
    assert gateway["spec"]["minAvailable"] == 1
    operator = _budgets("operator.replicas=2")["llmrouter-operator"]
    (pod_labels,) = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in helm_template("ns")
        if d["kind"] == "Deployment"
    ]
    assert operator["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # One replica: a budget of one would block every drain.
    assert _budgets("gateway.replicas=1") == {}
    assert _budgets("podDisruptionBudget.enabled=false", "operator.replicas=3") == {}
    percent = _budgets("podDisruptionBudget.gateway.minAvailable=50%")["llmrouter-gateway"]
    assert percent["spec"]["minAvailable"] == "50%"
