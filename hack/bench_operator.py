"""Operator figures on the test control plane: how long a key revocation takes to reach
the gateway (20 trials), and how long 500 Tenants applied at once take to converge, then
the revocation time under that load. A benchmark, not a test.

    .venv/bin/python hack/bench_operator.py [--trials 20] [--tenants 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from kopf.testing import KopfRunner
from kubernetes import client, config
from kubernetes.config import kube_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.incluster import config_watcher
from tests.e2e.kube_fixtures import install_crds
from tests.support.fake_upstream import UpstreamThread
from tests.support.kube import ControlPlane, build
from tests.support.serve import free_port

GROUP, VERSION = "llmrouter.io", "v1alpha1"


def run_gateway(port: int) -> None:
    app = create_app(GatewaySettings(port=port), ConfigStore())
    app.cleanup_ctx.append(config_watcher("llmrouter", "llmrouter-gateway-config"))
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
    try:
        secret = client.CoreV1Api().read_namespaced_secret(f"llmrouter-key-{name}-k", "default")
    except client.exceptions.ApiException:
        return None
    return base64.b64decode((secret.data or {})["apiKey"]).decode()


def status(url: str, key: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
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
        "spec": {"models": ["m"], "apiKeys": [{"name": "k", "role": "user"}]},
    }


def revocation_s(url: str, name: str) -> float:
    api = client.CustomObjectsApi()
    api.create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", tenant(name))
    key = until(lambda: key_of(name))
    until(lambda: status(url, key) == 200)
    started = time.monotonic()
    api.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "tenants", name, {"spec": {"apiKeys": []}}
    )
    until(lambda: status(url, key) == 401)
    return time.monotonic() - started


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"p50 {statistics.median(values):.3f} s, p95 {q[18]:.3f} s, max {max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tenants", type=int, default=500)
    args = parser.parse_args()
    upstream = UpstreamThread()
    fake = upstream.start()
    with ControlPlane(build()) as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(cp.kubeconfig)
        config.load_kube_config(str(cp.kubeconfig))
        install_crds()
        client.CoreV1Api().create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="llmrouter"))
        )
        client.CustomObjectsApi().create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            "modeldeployments",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelDeployment",
                "metadata": {"name": "m"},
                "spec": {
                    "external": {"provider": "openai-compatible", "baseURL": fake.url, "model": "m"}
                },
            },
        )
        port = free_port()
        threading.Thread(target=run_gateway, args=(port,), daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        argv = ["run", "--all-namespaces", "--standalone", "-m", "llmrouter.operator.main"]
        with KopfRunner(argv, timeout=120):
            quiet = [revocation_s(url, f"quiet-{i}") for i in range(args.trials)]
            api = client.CustomObjectsApi()
            started = time.monotonic()
            for i in range(args.tenants):
                api.create_namespaced_custom_object(
                    GROUP, VERSION, "default", "tenants", tenant(f"bulk-{i}")
                )
            applied = time.monotonic() - started
            last = f"bulk-{args.tenants - 1}"
            until(lambda: key_of(last), 900, 0.2)
            keys_s = time.monotonic() - started
            key = until(lambda: key_of(last))
            until(lambda: status(url, key) == 200, 900, 0.2)
            converged = time.monotonic() - started
            loaded = [revocation_s(url, f"loaded-{i}") for i in range(5)]
    upstream.stop()
    print(f"\nkey revocation → 401 at the gateway, {args.trials} trials: {summary(quiet)}")
    print(
        f"{args.tenants} Tenants applied in {applied:.1f} s; last key Secret after "
        f"{keys_s:.1f} s; last key usable at the gateway after {converged:.1f} s"
    )
    print(f"key revocation with {args.tenants} Tenants present, 5 trials: {summary(loaded)}")


if __name__ == "__main__":
    main()
