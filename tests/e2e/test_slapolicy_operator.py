"""The operator turns SLAPolicy objects into PrometheusRules on the real control plane,
with the chart's RBAC only; without the PrometheusRule CRD it falls back to a ConfigMap,
says so in a condition, and moves to the PrometheusRule once the CRD is installed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config

from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.slo import rule_file
from tests.e2e.kube_fixtures import (
    admin_client,
    control_plane,
    eventually,
    install_chart,
    service_account_kubeconfig,
    wait_established,
)
from tests.support.kube import ControlPlane

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "slo"
ADMIN: client.ApiClient


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane) -> Iterator[None]:
    global ADMIN
    ADMIN = admin_client(control_plane)
    core = client.CoreV1Api(ADMIN)
    names = [ns.metadata.name for ns in core.list_namespace().items if ns.metadata]
    if "llmrouter" not in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="llmrouter")))
        install_chart(ADMIN, "llmrouter")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    kubeconfig = service_account_kubeconfig(control_plane, ADMIN, "llmrouter", "llmrouter-operator")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    os.environ["LLMROUTER_RULES_RETRY_INTERVAL"] = "1"
    os.environ.pop("LLMROUTER_PROMETHEUS_URL", None)
    args = ["run", "--all-namespaces", "-m", "llmrouter.operator.main"]
    with KopfRunner(args, timeout=60) as runner:
        yield
    assert runner.exit_code == 0, runner.output


def policy(name: str, target: str = "99.9") -> dict[str, Any]:
    return {
        "apiVersion": "llmrouter.io/v1alpha1",
        "kind": "SLAPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "tenant": "acme",
            "objectives": [
                {"name": "availability", "type": "availability", "target": target},
                {"name": "latency", "type": "latency", "percentile": 95, "threshold": "2s"},
            ],
            "ruleLabels": {"release": "kube-prometheus-stack"},
        },
    }


def create(body: dict[str, Any]) -> dict[str, Any]:
    created = client.CustomObjectsApi(ADMIN).create_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NAMESPACE, "slapolicies", body
    )
    assert isinstance(created, dict)
    return created


def conditions(name: str) -> dict[str, dict[str, Any]]:
    obj = client.CustomObjectsApi(ADMIN).get_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NAMESPACE, "slapolicies", name
    )
    assert isinstance(obj, dict)
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def configmap(name: str) -> client.V1ConfigMap | None:
    try:
        found: client.V1ConfigMap = client.CoreV1Api(ADMIN).read_namespaced_config_map(
            name, NAMESPACE
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def prometheus_rule(name: str) -> dict[str, Any] | None:
    try:
        found = client.CustomObjectsApi(ADMIN).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", NAMESPACE, "prometheusrules", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    assert isinstance(found, dict)
    return found


def install_prometheus_rule_crd() -> None:
    path = subprocess.run(
        [str(REPO / "hack" / "prometheusrule-crd.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    crd = yaml.safe_load(Path(path).read_text())
    api = client.ApiextensionsV1Api(ADMIN)
    api.create_custom_resource_definition(crd)
    wait_established(api, crd["metadata"]["name"])


def test_rules_go_to_a_configmap_until_the_prometheusrule_crd_exists(operator: None) -> None:
    created = create(policy("acme"))
    expected = rule_file([SLAPolicy.model_validate(created)])

    def fallback() -> Any:
        ready = conditions("acme").get("RulesReady")
        cm = configmap("slapolicy-acme-rules")
        return ready and ready["reason"] == "PrometheusRuleCRDNotInstalled" and cm and (ready, cm)

    ready, cm = eventually(fallback, timeout_s=30)
    assert ready["status"] == "False"
    assert "ConfigMap slapolicy-acme-rules" in ready["message"]
    assert yaml.safe_load(cm.data["rules.yaml"]) == expected
    assert cm.metadata.owner_references[0].uid == created["metadata"]["uid"]

    install_prometheus_rule_crd()
    rule = eventually(lambda: prometheus_rule("slapolicy-acme"), timeout_s=30)
    assert rule["spec"] == expected
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    eventually(lambda: conditions("acme").get("RulesReady", {}).get("status") == "True", 30)
    # The fallback is gone once the PrometheusRule holds the rules.
    eventually(lambda: configmap("slapolicy-acme-rules") is None, 30)
    assert conditions("acme")["AlertsCanFire"]["status"] == "True"


def test_a_target_too_low_to_page_is_a_condition(operator: None) -> None:
    eventually(lambda: conditions("acme").get("RulesReady", {}).get("status") == "True", 60)
    create(policy("low", target="90"))
    alerts = eventually(lambda: conditions("low").get("AlertsCanFire"), 30)
    assert alerts["status"] == "False" and alerts["reason"] == "TargetTooLow"
    assert "objective availability: the 1h/5m page can never fire" in alerts["message"]
    assert eventually(lambda: prometheus_rule("slapolicy-low"), 30)


def test_an_edited_policy_gets_new_rules(operator: None) -> None:
    eventually(lambda: prometheus_rule("slapolicy-acme"), 60)
    client.CustomObjectsApi(ADMIN).patch_namespaced_custom_object(
        "llmrouter.io",
        "v1alpha1",
        NAMESPACE,
        "slapolicies",
        "acme",
        {"spec": {"window": "28d"}},
    )

    def window_28d() -> bool:
        rule = prometheus_rule("slapolicy-acme") or {}
        exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
        return any("[28d]" in e for e in exprs)

    eventually(window_28d, 30)


def test_without_prometheus_the_gateway_pods_are_asked(operator: None) -> None:
    # The gateway pods here run on a kwok node: listed as Running, with addresses nothing
    # answers at. The operator asks each, and says that none answered.
    # Until kwok reports the gateway pods running, there is no pod to ask (NoSource).
    known = eventually(
        lambda: (
            (c := conditions("acme").get("ComplianceKnown"))
            and c["reason"] == "GatewayCountsUnavailable"
            and c
        ),
        60,
    )
    assert known["status"] == "False"
    assert known["reason"] == "GatewayCountsUnavailable", known
    assert known["message"].startswith("no gateway answered of ")
    assert ":9090" in known["message"]
