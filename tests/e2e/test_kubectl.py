"""The user's path, driven with kubectl (built from its Go module, the control plane's
release) against the test control plane while the operator runs: apply the CRDs and the
examples, read the printer columns, explain the schema, wait for Ready, and check that a
server-side apply of the same files finds nothing to change once the operator reconciled."""

from __future__ import annotations

import json
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

from tests.e2e.kube_fixtures import (
    admin_client,
    control_plane,
    install_chart,
    service_account_kubeconfig,
)
from tests.support.kube import ControlPlane
from tests.support.redis_server import RedisServer

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
NS = "kubectl-e2e"
# The field managers that may own spec fields: the user's tools, never the operator.
USER_MANAGERS = {"kubectl-client-side-apply", "kubectl", "gitops"}


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Iterator[Any]:
    binary = subprocess.run(
        [str(REPO / "hack/build-kubectl.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()

    def run(
        *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [binary, "--kubeconfig", str(control_plane.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}:\n{out.stdout}{out.stderr}"
        return out

    yield run


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, redis_server: RedisServer) -> Iterator[None]:
    """The operator with the chart's ServiceAccount and RBAC, as in test_operator.py."""
    os.environ["LLMROUTER_STATE_URL"] = redis_server.url
    admin = admin_client(control_plane)
    for name in ("llmrouter", NS):
        try:
            client.CoreV1Api(admin).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as exc:
            if exc.status != 409:  # another module's operator made it
                raise
    install_chart(admin, "llmrouter")
    kubeconfig = service_account_kubeconfig(control_plane, admin, "llmrouter", "llmrouter-operator")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    args = ["run", "--all-namespaces", "-m", "llmrouter.operator.main"]
    with KopfRunner(args, timeout=60) as runner:
        yield
    assert runner.exit_code == 0, runner.output


@pytest.fixture(scope="module")
def applied(kubectl: Any, operator: None) -> Any:
    # The chart's copy is installed already (server-side, as "helm"): apply as a user
    # upgrading the CRDs by hand does.
    out = kubectl("apply", "-f", str(REPO / "crds")).stdout
    assert out.count("customresourcedefinition.apiextensions.k8s.io/") == 4, out
    kubectl("-n", NS, "create", "secret", "generic", "openai", "--from-literal=apiKey=sk-test")
    kubectl("-n", NS, "label", "secret", "openai", "llmrouter.io/provider-credential=true")
    out = kubectl("-n", NS, "apply", "-f", str(REPO / "examples")).stdout
    assert "tenant.llmrouter.io/acme created" in out, out
    assert "modeldeployment.llmrouter.io/gpt-4o-mini created" in out, out
    kubectl(
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "tenant/acme",
        "modeldeployment/gpt-4o-mini",
        "--timeout=60s",
    )
    return kubectl


def _printer_columns(plural: str) -> list[str]:
    crd = yaml.safe_load((REPO / f"crds/llmrouter.io_{plural}.yaml").read_text())
    return [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def _table(text: str) -> list[dict[str, str]]:
    """Rows of `kubectl get` output, cut at the header's column starts."""
    lines = text.strip().splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def test_get_shows_the_printer_columns(applied: Any) -> None:
    out = applied("-n", NS, "get", "tenants,modeldeployments,experiments").stdout
    for plural in ("tenants", "modeldeployments", "experiments"):
        assert " ".join(["NAME", *_printer_columns(plural)]) in " ".join(out.split()), out
    tenants = _table(applied("-n", NS, "get", "tenants").stdout)
    [acme] = [row for row in tenants if row["NAME"] == "acme"]
    assert acme["DISPLAY"] == "ACME Corp"
    assert acme["MODELS"] == '["chat","gpt-4o-mini"]'
    # Written by the operator into status. A printer column shows the first match of its
    # JSONPath only, so this column names the first key.
    status = json.loads(applied("-n", NS, "get", "tenant", "acme", "-o", "json").stdout)["status"]
    assert [k["name"] for k in status["apiKeys"]] == ["ci-bot", "dashboards"]
    assert acme["KEYS"] == "ci-bot"
    # Every column of every object shows what its JSONPath finds in the object.
    for plural in ("tenants", "modeldeployments", "experiments"):
        crd = yaml.safe_load((REPO / f"crds/llmrouter.io_{plural}.yaml").read_text())
        columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        objects = json.loads(applied("-n", NS, "get", plural, "-o", "json").stdout)["items"]
        rows = {row["NAME"]: row for row in _table(applied("-n", NS, "get", plural).stdout)}
        assert set(rows) == {o["metadata"]["name"] for o in objects} != set(), plural
        for obj in objects:
            row = rows[obj["metadata"]["name"]]
            for column in columns:
                if column["type"] != "date":
                    want = _cell(_first(obj, column["jsonPath"]))
                    assert row[column["name"].upper()] == want, (plural, column, row)


def _first(obj: Any, path: str) -> Any:
    """The first value a simple JSONPath (`.a.b`, `.a[*].b`) finds, as the API server shows."""
    for part in path.lstrip(".").split("."):
        many = part.endswith("[*]")
        part = part.removesuffix("[*]")
        obj = obj.get(part) if isinstance(obj, dict) else None
        if many:
            obj = obj[0] if obj else None
    return obj


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def test_explain_describes_every_limit(kubectl: Any, control_plane: ControlPlane) -> None:
    out = kubectl("explain", "tenant.spec.limits").stdout
    crd = yaml.safe_load((REPO / "crds/llmrouter.io_tenants.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    fields = spec["properties"]["limits"]["properties"]
    assert "FIELDS:" in out, out
    flat = " ".join(out.split())
    for name, schema in fields.items():
        assert f"{name}\t" in out or f"{name} " in out, (name, out)
        assert schema.get("description"), f"tenant.spec.limits.{name} has no description"
        assert " ".join(schema["description"].split()) in flat, (name, out)


def test_server_side_apply_twice_then_diff_shows_nothing(applied: Any) -> None:
    examples = str(REPO / "examples")
    for _ in range(2):
        applied("-n", NS, "apply", "--server-side", "--field-manager=gitops", "-f", examples)
    applied(
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "tenant/acme",
        "modeldeployment/gpt-4o-mini",
        "--timeout=60s",
    )
    diff = applied(
        "-n", NS, "diff", "--server-side", "--field-manager=gitops", "-f", examples, check=False
    )
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
    # The operator writes status and its own metadata, never a spec field.
    for kind in ("tenants", "modeldeployments", "experiments"):
        items = json.loads(
            applied("-n", NS, "get", kind, "-o", "json", "--show-managed-fields").stdout
        )["items"]
        assert items, kind
        for item in items:
            for entry in item["metadata"]["managedFields"]:
                if "f:spec" in entry.get("fieldsV1", {}):
                    assert entry["manager"] in USER_MANAGERS, (kind, entry["manager"])


PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"


def _monitoring_crds() -> list[Path]:
    """prometheus-operator's ServiceMonitor and PodMonitor CRDs, from its Go module (the
    release hack/prometheusrule-crd.sh fetches)."""
    script = REPO / "hack/prometheusrule-crd.sh"
    path = Path(subprocess.run([str(script)], check=True, capture_output=True, text=True).stdout)
    root = Path(os.environ.get("LLMROUTER_CACHE", Path.home() / ".cache/llmrouter"))
    env = {**os.environ, "GOMODCACHE": str(root / "go/mod"), "GOFLAGS": "-mod=mod"}
    version = path.parent.name
    module = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{version}"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    crds = Path(module["Dir"]) / "example/prometheus-operator-crd"
    return [crds / f"monitoring.coreos.com_{p}.yaml" for p in ("servicemonitors", "podmonitors")]


def test_chart_with_every_option_passes_a_server_dry_run(kubectl: Any, operator: None) -> None:
    """`helm template | kubectl apply --dry-run=server`, monitors on, against the real CRDs
    (the chart's own and ClusterKopfPeering's, installed with the operator)."""
    for crd in _monitoring_crds():
        kubectl("apply", "--server-side", "-f", str(crd))
    for name in ("servicemonitors", "podmonitors"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com")
    helm = subprocess.run(
        [str(REPO / "hack/build-helm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    rendered = subprocess.run(
        [
            *(helm, "template", "llmrouter", str(REPO / "charts/llmrouter"), "-n", NS),
            "--api-versions=monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions=monitoring.coreos.com/v1/PodMonitor",
            "--set=monitoring.serviceMonitor.enabled=true",
            "--set=monitoring.podMonitor.enabled=true",
            "--set=operator.replicas=2",
            "--set=dashboards.enabled=true",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"ServiceMonitor", "PodMonitor", "PodDisruptionBudget", "Deployment"} <= kinds
    out = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm",
        "-f",
        "-",
        stdin=rendered,
    ).stdout
    assert "servicemonitor.monitoring.coreos.com/llmrouter-gateway serverside-applied" in out
    assert "podmonitor.monitoring.coreos.com/llmrouter-gateway serverside-applied" in out
    assert out.count("(server dry run)") == sum(1 for d in yaml.safe_load_all(rendered) if d)
