"""The chart's values schema, security contexts, image digest and disruption budgets, as a
real `helm` renders and lints them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def test_gateway_pods_the_operator_runs_are_locked_down_as_the_charts() -> None:
    from llmrouter.operator.render import render_gateway_deployment
    from llmrouter.operator.settings import OperatorSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = render_gateway_deployment(OperatorSettings())["spec"]["template"]["spec"]
    assert pod["securityContext"].items() <= values["podSecurityContext"].items()
    (container,) = pod["containers"]
    assert container["securityContext"] == values["securityContext"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]
    # What the chart's ServiceMonitor and PodMonitor scrape.
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]


MONITORING_APIS = (
    "--api-versions=monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions=monitoring.coreos.com/v1/PodMonitor",
)


def _render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_helm(), "template", "llmrouter", str(CHART), "--namespace", "ns", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_monitors_are_off_by_default_and_aimed_at_the_gateway_pods() -> None:
    # tests/e2e/test_kubectl.py has the API server check them against the real CRDs.
    kinds = {d["kind"] for d in helm_template("ns")}
    assert not kinds & {"ServiceMonitor", "PodMonitor"}
    out = _render(
        *MONITORING_APIS,
        "--set=monitoring.serviceMonitor.enabled=true",
        "--set=monitoring.podMonitor.enabled=true",
        "--set=monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
    )
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    service_monitor = docs["ServiceMonitor", "llmrouter-gateway"]
    pod_monitor = docs["PodMonitor", "llmrouter-gateway"]
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The ServiceMonitor finds the metrics Service, which finds the gateway pods' port.
    service = docs["Service", "llmrouter-gateway-metrics"]
    assert (
        service_monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] == GATEWAY_SELECTOR
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert pod_monitor["spec"]["selector"]["matchLabels"] == GATEWAY_SELECTOR
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("kind", ["serviceMonitor", "podMonitor"])
def test_a_monitor_without_its_crd_is_refused(kind: str) -> None:
    out = _render(f"--set=monitoring.{kind}.enabled=true")
    assert out.returncode != 0
    assert f"monitoring.{kind}.enabled: the cluster has no" in out.stderr, out.stderr
