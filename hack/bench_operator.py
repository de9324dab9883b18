"""Operator figures on the test control plane: how long a key revocation takes to reach
the gateway (20 trials), and how long 500 Tenants applied at once take to converge, then
the revocation time under that load. A benchmark, not a test.

    .venv/bin/python hack/bench_operator.py [--trials 20] [--tenants 500] [--smoke]
                                            [--kubeconfig PATH]

It starts the test control plane (tests/support/kube.py) unless --kubeconfig names one (admin
credentials) already running: its objects then go in namespaces of their own, which must not
exist yet. --smoke: 3 trials and 20 Tenants, to check that the benchmark still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web
from kopf.testing import KopfRunner
from kubernetes import client, config
from kubernetes.config import kube_config

# After the installed packages: the repository root also holds `operator`, a stdlib name.
sys.path.append(str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_logs import Logs

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.incluster import config_watcher
from tests.e2e.kube_fixtures import wait_established
from tests.support.fake_upstream import UpstreamThread
from tests.support.kube import ControlPlane, build
from tests.support.serve import free_port

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "llmrouter.io", "v1alpha1"
# The operator's own namespace (where it publishes the gateway's configuration) and the one
# the benchmark's resources live in; on a shared control plane, nothing else is in either.
RELEASE, NAMESPACE = "llmrouter-bench", "bench"
MODEL = "bench-model"  # a model name of the cluster is claimed once, whatever its namespace


def progress(line: str) -> None:
    # The operator's runner captures sys.stdout while it runs.
    print(line, file=sys.__stdout__, flush=True)


def run_gateway(port: int) -> None:
    app = create_app(GatewaySettings(port=port), ConfigStore())
    app.cleanup_ctx.append(config_watcher(RELEASE, "llmrouter-gateway-config"))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    loop.run_forever()


def until(check: Any, timeout_s: float = 120, interval_s: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval_s)
    raise TimeoutError("gave up waiting")


def key_of(name: str) -> str | None:
    """The tenant's key once the operator made it, from the Secret its status names."""
    try:
        found = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "tenants", name
        )
        keys = found.get("status", {}).get("apiKeys") or [{}]
        secret_name = keys[0].get("secretName")
        if not secret_name:
            return None
        secret = client.CoreV1Api().read_namespaced_secret(secret_name, NAMESPACE)
    except client.exceptions.ApiException:
        return None
    return base64.b64decode((secret.data or {})["apiKey"]).decode()


def status(url: str, key: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {key}"},
    ).status_code


def tenant(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"models": [MODEL], "apiKeys": [{"name": "k", "role": "user"}]},
    }


def revocation_s(url: str, name: str) -> float:
    api = client.CustomObjectsApi()
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "tenants", tenant(name))
    key = until(lambda: key_of(name))
    until(lambda: status(url, key) == 200)
    started = time.monotonic()
    api.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "tenants", name, {"spec": {"apiKeys": []}}
    )
    until(lambda: status(url, key) == 401)
    elapsed = time.monotonic() - started
    progress(f"  {name}: revoked key refused after {elapsed:.3f} s")
    return elapsed


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"p50 {statistics.median(values):.3f} s, p95 {q[18]:.3f} s, max {max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument(
        "--kubeconfig", type=Path, help="a running control plane to use (admin credentials)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: check that it runs, measure nothing"
    )
    args = parser.parse_args()
    loaded_trials = 5
    if args.smoke:
        args.trials, args.tenants, loaded_trials = 3, 20, 2
    with Logs("bench-operator") as logs:
        # The gateway's and the operator's logs; Kopf's own output is kept by its runner.
        logging.basicConfig(filename=logs.path("gateway-and-operator"), level=logging.INFO)
        if args.kubeconfig:
            results = measure(args, loaded_trials, args.kubeconfig, logs)
        else:
            with ControlPlane(build()) as cp:
                results = measure(args, loaded_trials, cp.kubeconfig, logs)
        quiet, applied, keys_s, converged, loaded = results
        print(f"\nkey revocation → 401 at the gateway, {args.trials} trials: {summary(quiet)}")
        print(
            f"{args.tenants} Tenants applied in {applied:.1f} s; last key Secret after "
            f"{keys_s:.1f} s; last key usable at the gateway after {converged:.1f} s"
        )
        print(
            f"key revocation with {args.tenants} Tenants present, {loaded_trials} trials: "
            f"{summary(loaded)}"
        )


def measure(
    args: argparse.Namespace, loaded_trials: int, kubeconfig: Path, logs: Logs
) -> tuple[list[float], float, float, float, list[float]]:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ["LLMROUTER_NAMESPACE"] = RELEASE
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    config.load_kube_config(str(kubeconfig))
    install_crds(admin_client_of(kubeconfig))
    for namespace in (RELEASE, NAMESPACE):
        client.CoreV1Api().create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
    upstream = UpstreamThread()
    fake = upstream.start()
    client.CustomObjectsApi().create_namespaced_custom_object(
        GROUP,
        VERSION,
        NAMESPACE,
        "modeldeployments",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": MODEL},
            "spec": {
                "external": {"provider": "openai-compatible", "baseURL": fake.url, "model": "m"}
            },
        },
    )
    port = free_port()
    threading.Thread(target=run_gateway, args=(port,), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    argv = ["run", "--namespace", NAMESPACE, "--standalone", "-m", "llmrouter.operator.main"]
    runner = KopfRunner(argv, timeout=120)
    try:
        with runner:
            progress(f"key revocation, {args.trials} trials")
            quiet = [revocation_s(url, f"quiet-{i}") for i in range(args.trials)]
            api = client.CustomObjectsApi()
            progress(f"applying {args.tenants} Tenants")
            started = time.monotonic()
            for i in range(args.tenants):
                api.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "tenants", tenant(f"bulk-{i}")
                )
            applied = time.monotonic() - started
            last = f"bulk-{args.tenants - 1}"
            until(lambda: key_of(last), 900, 0.2)
            keys_s = time.monotonic() - started
            key = until(lambda: key_of(last))
            until(lambda: status(url, key) == 200, 900, 0.2)
            converged = time.monotonic() - started
            progress(f"key revocation with {args.tenants} Tenants present")
            loaded = [revocation_s(url, f"loaded-{i}") for i in range(loaded_trials)]
    finally:
        if runner.future.done() and runner.future.exception() is None:
            logs.path("kopf").write_text(runner.output)
        upstream.stop()
    return quiet, applied, keys_s, converged, loaded


def admin_client_of(kubeconfig: Path) -> client.ApiClient:
    api_client: client.ApiClient = config.new_client_from_config(str(kubeconfig))
    return api_client


def install_crds(api_client: client.ApiClient) -> None:
    """The CRDs `helm install` would install (the operator also reads Kopf's peering), each
    unless it is there already."""
    api = client.ApiextensionsV1Api(api_client)
    for path in sorted((REPO / "charts" / "llmrouter" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            api.create_custom_resource_definition(crd)
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        wait_established(api, crd["metadata"]["name"])


if __name__ == "__main__":
    main()
