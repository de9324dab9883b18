"""End to end: a real Prometheus (Debian's package) scrapes `llmrouter serve` on loopback,
which answers with a real llama-server and fails for a model whose server is down; the
generated rules record what the gateway counted, and the operator's SLAPolicy status moves
from ok to breached with the budget those counts give."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.config import kube_config

from tests.e2e.kube_fixtures import (
    admin_client,
    control_plane,
    eventually,
    install_chart,
    service_account_kubeconfig,
)
from tests.support.kube import ControlPlane
from tests.support.llama import LlamaServer
from tests.support.processes import stop, tail, wait_until
from tests.support.serve import ServeProcess, free_port, llmrouter

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
NAMESPACE = "slo-e2e"
KEY = "llmr_slo_e2e_key_00000000000000001"
TENANT = f"{NAMESPACE}/acme"

RESOURCES = f"""
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {{name: chat, namespace: {NAMESPACE}}}
spec:
  llamacpp: {{model: {{url: "https://example.invalid/tiny.gguf"}}}}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {{name: flaky, namespace: {NAMESPACE}}}
spec:
  external: {{provider: openai-compatible, baseURL: "http://127.0.0.1:{{down}}/v1", model: x}}
  timeouts: {{connect: 1s, firstToken: 2s, total: 5s}}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {{name: acme, namespace: {NAMESPACE}}}
spec:
  models: [chat, flaky]
  apiKeys: [{{name: dev, role: developer}}]
"""

POLICY: dict[str, Any] = {
    "apiVersion": "llmrouter.io/v1alpha1",
    "kind": "SLAPolicy",
    "metadata": {"name": "acme", "namespace": NAMESPACE},
    "spec": {
        "tenant": "acme",
        "models": ["chat", "flaky"],
        "objectives": [{"name": "availability", "type": "availability", "target": "99"}],
        "alerting": {"minRequestsPerHour": 0},
    },
}


@dataclass
class Stack:
    gateway: ServeProcess
    prometheus_url: str

    def send(self, model: str) -> int:
        c = openai.OpenAI(base_url=f"{self.gateway.url}/v1", api_key=KEY, max_retries=0)
        try:
            c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def gateway_count(self, code: str) -> float:
        text = httpx.get(f"{self.gateway.metrics_url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llmrouter_requests_total{")
            and f'tenant="{TENANT}"' in line
            and f'code="{code}"' in line
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llama_chat: LlamaServer) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: run hack/system-deps.sh"
    tmp = tmp_path_factory.mktemp("slo")
    (tmp / "resources.yaml").write_text(RESOURCES.replace("{down}", str(free_port())))
    (tmp / "keys.yaml").write_text(f"{TENANT}:\n  dev: {KEY}\n")
    (tmp / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    rules = subprocess.run(
        llmrouter("slo", "rules", "-f", str(tmp / "policy.yaml")),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp / "rules.yaml").write_text(rules)
    args = ["-f", str(tmp / "resources.yaml"), "--keys-file", str(tmp / "keys.yaml")]
    args += ["--endpoint", f"chat={llama_chat.url}"]
    with ServeProcess(args, tmp / "serve.log") as gateway:
        s = Stack(gateway, "")
        # Every series exists before the first scrape, as in a long-running gateway: the
        # rules then see every later request as an increase. (increase() cannot count the
        # first value of a series born between two scrapes.) Six failures open the
        # model's breaker: 502 from the server that is down, then 503.
        assert s.send("chat") == 200
        warm_up = sorted({s.send("flaky") for _ in range(6)})
        assert warm_up == [502, 503], warm_up
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "gateway",
                    "static_configs": [{"targets": [f"127.0.0.1:{gateway.metrics_port}"]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = tmp / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        s.prometheus_url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _ready(s.prometheus_url), 30, "prometheus to be ready")
            wait_until(lambda: scraped(s), 30, "prometheus to scrape the gateway")
            yield s
        finally:
            stop(proc)
            print(tail(log))


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def scraped(stack: Stack) -> bool:
    """Prometheus holds the gateway's counters as they are now."""
    for code in ("200", "502", "503", "504"):
        counted = stack.gateway_count(code)
        seen = stack.value(f'sum(llmrouter_requests_total{{tenant="{TENANT}",code="{code}"}})')
        if counted and seen != counted:
            return False
    return True


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, stack: Stack) -> Iterator[None]:
    admin = admin_client(control_plane)
    core = client.CoreV1Api(admin)
    names = [ns.metadata.name for ns in core.list_namespace().items if ns.metadata]
    if "llmrouter" not in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="llmrouter")))
        install_chart(admin, "llmrouter")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    kubeconfig = service_account_kubeconfig(control_plane, admin, "llmrouter", "llmrouter-operator")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    os.environ["LLMROUTER_PROMETHEUS_URL"] = stack.prometheus_url
    os.environ["LLMROUTER_SLO_INTERVAL"] = "1"
    try:
        args = ["run", "--all-namespaces", "-m", "llmrouter.operator.main"]
        with KopfRunner(args, timeout=60) as runner:
            yield
        assert runner.exit_code == 0, runner.output
    finally:
        os.environ.pop("LLMROUTER_PROMETHEUS_URL")
        os.environ.pop("LLMROUTER_SLO_INTERVAL")


def status(admin: client.ApiClient) -> dict[str, Any]:
    obj = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NAMESPACE, "slapolicies", "acme"
    )
    assert isinstance(obj, dict)
    found: dict[str, Any] = obj.get("status") or {}
    return found


def test_recorded_series_follow_the_gateway_and_the_status_goes_from_ok_to_breached(
    stack: Stack, operator: None, control_plane: ControlPlane
) -> None:
    admin = admin_client(control_plane)
    for _ in range(20):
        assert stack.send("chat") == 200
    eventually(lambda: scraped(stack), 20, 0.5)
    labels = f'slapolicy="{NAMESPACE}/acme",objective="availability"'
    # Only successes since the first scrape: a ratio of 0 in every window, full budget.
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        ratio = eventually(
            lambda w=window: stack.query(f"llmrouter_slo:error_ratio:rate{w}{{{labels}}}"), 20
        )
        assert float(ratio[0]["value"][1]) == 0
    eventually(lambda: stack.value(f"llmrouter_slo:error_budget_remaining{{{labels}}}") == 1, 20)

    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "llmrouter.io", "v1alpha1", NAMESPACE, "slapolicies", POLICY
    )
    ok = eventually(lambda: (status(admin).get("objectives") or [{}])[0].get("state") == "ok", 30)
    assert ok
    first = status(admin)
    assert first["source"] == "prometheus" and first["compliant"] is True
    assert first["budget"] == "100.0%"

    failed = [stack.send("flaky") for _ in range(10)]
    assert all(code >= 500 for code in failed), failed
    eventually(lambda: scraped(stack), 20, 0.5)
    # 10 failures among 30 requests since the first scrape: 33.3 % against 1 % allowed.
    expected = 1 - (10 / 30) / 0.01

    # An evaluation that started after Prometheus had every count.
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))

    def breached() -> dict[str, Any] | None:
        s = status(admin)
        o = (s.get("objectives") or [{}])[0]
        fresh = s.get("lastEvaluated", "") >= after
        return s if fresh and o.get("state") == "breached" else None

    s = eventually(breached, 30)
    o = s["objectives"][0]
    assert s["compliant"] is False
    # Within 5 %: increase() extrapolates each series to the window's edges by up to half a
    # scrape interval, which weighs on series a few seconds old (a few % seen here).
    assert o["errorBudgetRemaining"] == pytest.approx(expected, rel=0.05)
    assert o["sli"] == pytest.approx(20 / 30, rel=0.05)
    assert o["burnRates"]["1h"] == pytest.approx(100 / 3, rel=0.05)
    recorded = stack.value(f"llmrouter_slo:error_ratio:rate5m{{{labels}}}")
    assert recorded == pytest.approx(10 / 30, rel=0.05)
    events = client.CoreV1Api(admin).list_namespaced_event(NAMESPACE).items
    assert any(
        e.reason == "ObjectiveState" and e.message == "objective availability: ok -> breached"
        for e in events
    )
