"""The SLAPolicy handler without a cluster: what it applies, and what it writes when the
PrometheusRule CRD is missing or the spec is bad."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from llmrouter.operator import kube
from llmrouter.operator.controllers import slapolicy

BODY: dict[str, Any] = {
    "apiVersion": "llmrouter.io/v1alpha1",
    "kind": "SLAPolicy",
    "metadata": {"name": "p", "namespace": "team", "uid": "u-1", "generation": 3},
    "spec": {
        "tenant": "acme",
        "objectives": [{"name": "availability", "type": "availability", "target": "99.9"}],
    },
}


class Cluster:
    def __init__(self, crd_installed: bool) -> None:
        self.crd_installed = crd_installed
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "PrometheusRule" and not self.crd_installed:
            raise ResourceNotFoundError("No matches found for PrometheusRule")
        self.applied.append(obj)
        return obj

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self.deleted.append((kind, name, namespace))


def run(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, body: dict[str, Any]
) -> tuple[kopf.Patch, Exception | None]:
    """The handler's patch (Kopf applies it even when the handler raises) and what it raised."""
    monkeypatch.setattr(kube, "apply", cluster.apply)
    monkeypatch.setattr(kube, "delete", cluster.delete)
    patch = kopf.Patch()
    kopf_body = kopf.Body(cast(Any, body))
    # Called as Kopf would, with only the arguments the handler reads.
    handler = cast(Any, slapolicy.reconcile)
    try:
        handler(
            body=kopf_body,
            meta=kopf.Meta(kopf_body),
            status=kopf.Status(kopf_body),
            patch=patch,
            logger=logging.getLogger("test"),
        )
    except Exception as exc:
        return patch, exc
    return patch, None


def conditions(patch: kopf.Patch) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in patch["status"]["conditions"]}


def test_without_the_crd_the_rules_go_to_a_configmap_a_condition_says_so_and_it_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(crd_installed=False)
    monkeypatch.setenv("LLMROUTER_RULES_RETRY_INTERVAL", "7")
    patch, raised = run(monkeypatch, cluster, BODY)
    assert isinstance(raised, kopf.TemporaryError) and raised.delay == 7
    [configmap] = cluster.applied
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "slapolicy-p-rules"
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert cluster.deleted == []
    ready = conditions(patch)["RulesReady"]
    assert ready["status"] == "False" and ready["reason"] == "PrometheusRuleCRDNotInstalled"
    assert "ConfigMap slapolicy-p-rules" in ready["message"]
    assert ready["observedGeneration"] == 3


def test_with_the_crd_the_prometheus_rule_is_applied_and_the_fallback_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(crd_installed=True)
    patch, raised = run(monkeypatch, cluster, BODY)
    assert raised is None
    [rule] = cluster.applied
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["name"] == "slapolicy-p"
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert cluster.deleted == [("ConfigMap", "slapolicy-p-rules", "team")]
    assert conditions(patch)["RulesReady"]["status"] == "True"
    assert conditions(patch)["AlertsCanFire"]["status"] == "True"


def test_a_spec_the_model_refuses_is_a_permanent_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Written before the CEL rules existed, or by a client that skips validation.
    body = {**BODY, "spec": {**BODY["spec"], "window": "7d"}}
    cluster = Cluster(crd_installed=True)
    patch, raised = run(monkeypatch, cluster, body)
    assert isinstance(raised, kopf.PermanentError)
    assert cluster.applied == []
    ready = conditions(patch)["RulesReady"]
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec.window: Input should be '28d' or '30d'")
