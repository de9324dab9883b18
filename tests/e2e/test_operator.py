"""The operator and the gateway against the real control plane, as a user drives them:
kubectl-style applies of the example resources, keys from the generated Secrets, requests
through the gateway to a real llama-server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.config import kube_config

from llmrouter.gateway.app import create_app
from llmrouter.gateway.config import hash_api_key
from llmrouter.gateway.credentials import MappingCredentials
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.incluster import config_watcher, credentials_watcher
from llmrouter.operator.names import api_key_secret_name, provider_copy_name, server_key_secret_name
from tests.e2e.kube_fixtures import (
    admin_client,
    control_plane,
    eventually,
    install_chart,
    service_account_kubeconfig,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.kube import ControlPlane
from tests.support.llama import LlamaServer
from tests.support.redis_server import RedisServer
from tests.support.serve import serving

__all__ = ["control_plane"]
pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "llmrouter.io", "v1alpha1"


ADMIN: client.ApiClient
ROTATION_OVERLAP_S = 10
# What a Secret's owner sets so that ModelDeployments may send it to a provider.
PROVIDER_CREDENTIAL = {"llmrouter.io/provider-credential": "true"}


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, redis_server: RedisServer) -> Iterator[None]:
    """The operator as the chart installs it: with the chart's ServiceAccount and RBAC only,
    so that a verb missing from the ClusterRole fails these tests; gateways and operator
    share state in Redis, as with the chart's gateway.stateURL."""
    global ADMIN
    os.environ["LLMROUTER_STATE_URL"] = redis_server.url
    os.environ["LLMROUTER_USAGE_INTERVAL"] = "0.5"
    os.environ["LLMROUTER_ROTATION_OVERLAP"] = str(ROTATION_OVERLAP_S)
    os.environ["LLMROUTER_EXPERIMENT_INTERVAL"] = "0.5"
    ADMIN = admin_client(control_plane)
    client.CoreV1Api(ADMIN).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name="llmrouter"))
    )
    install_chart(ADMIN, "llmrouter")
    kubeconfig = service_account_kubeconfig(control_plane, ADMIN, "llmrouter", "llmrouter-operator")
    # The kubernetes client reads $KUBECONFIG once, when imported: point its default here.
    os.environ["KUBECONFIG"] = str(kubeconfig)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    args = ["run", "--all-namespaces", "-m", "llmrouter.operator.main"]
    with KopfRunner(args, timeout=60) as runner:
        yield
    assert runner.exit_code == 0, runner.output


@pytest.fixture
async def gateway(operator: None, redis_server: RedisServer) -> AsyncIterator[str]:
    credentials = MappingCredentials()
    app = create_app(GatewaySettings(state_url=redis_server.url), ConfigStore(), credentials)
    app.cleanup_ctx.append(config_watcher("llmrouter", "llmrouter-gateway-config"))
    app.cleanup_ctx.append(credentials_watcher("llmrouter", credentials))
    async with serving(app) as url:
        yield url


async def wait(check: Any, timeout_s: float = 30) -> Any:
    """`eventually` in a thread: the gateway runs on this test's event loop."""
    return await asyncio.to_thread(eventually, check, timeout_s)


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(ADMIN)


def apply_file(path: Path, namespace: str = "default") -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        plural = doc["kind"].lower() + "s"
        custom().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, doc)


def external(name: str, base_url: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "external": {"provider": "openai-compatible", "baseURL": base_url, "model": model}
        },
    }


def key_of(tenant: str, key: str, namespace: str = "default") -> str | None:
    """The API key the operator made for ``key`` of ``tenant``."""
    try:
        secret = client.CoreV1Api(ADMIN).read_namespaced_secret(
            api_key_secret_name(tenant, key), namespace
        )
    except client.exceptions.ApiException:
        return None
    return base64.b64decode((secret.data or {})["apiKey"]).decode()


def published() -> dict[str, Any]:
    """The gateway configuration the operator published last."""
    secret = client.CoreV1Api(ADMIN).read_namespaced_secret("llmrouter-gateway-config", "llmrouter")
    found: dict[str, Any] = json.loads(base64.b64decode((secret.data or {})["config.json"]))
    return found


def conditions_of(plural: str, name: str, namespace: str = "default") -> dict[str, Any]:
    found = custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    assert isinstance(found, dict)
    return {c["type"]: c for c in found.get("status", {}).get("conditions", [])}


def status_code(gateway: str, key: str, model: str = "chat") -> int:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(
        f"{gateway}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
    )
    return resp.status_code


def tenant(name: str) -> dict[str, Any]:
    found = custom().get_namespaced_custom_object(GROUP, VERSION, "default", "tenants", name)
    assert isinstance(found, dict)
    return found


async def test_apply_tenant_use_key_then_revoke_it(gateway: str, llama_chat: LlamaServer) -> None:
    # The example tenant may use `chat` and `gpt-4o-mini`; here both are external models,
    # `chat` being the local llama-server.
    for name, url, model in (
        ("chat", llama_chat.url, "tiny"),
        ("gpt-4o-mini", "https://api.openai.com/v1", "gpt-4o-mini"),
    ):
        custom().create_namespaced_custom_object(
            GROUP, VERSION, "default", "modeldeployments", external(name, url, model)
        )
    apply_file(REPO / "examples" / "tenant.yaml")
    key = await wait(lambda: key_of("acme", "ci-bot"))
    assert key.startswith("llmr_")
    await wait(lambda: status_code(gateway, key) == 200)

    status = tenant("acme")["status"]
    assert [k["name"] for k in status["apiKeys"]] == ["ci-bot", "dashboards"]
    assert all(k["fingerprint"].startswith("sha256:") for k in status["apiKeys"])
    assert key not in str(status)
    assert tenant("acme")["metadata"]["generation"] == 1  # the operator never writes spec

    custom().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        "acme",
        {"spec": {"apiKeys": [{"name": "dashboards", "role": "analyst"}]}},
    )
    await wait(lambda: status_code(gateway, key) == 401)
    await wait(lambda: key_of("acme", "ci-bot") is None)


async def test_rotation_by_annotation(gateway: str, llama_chat: LlamaServer) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "rot"},
        "spec": {"models": ["chat"], "apiKeys": [{"name": "k", "role": "user"}]},
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", body)
    old = await wait(lambda: key_of("rot", "k"))
    await wait(lambda: status_code(gateway, old) == 200)
    custom().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        "rot",
        {"metadata": {"annotations": {"llmrouter.io/rotate-keys": "k"}}},
    )
    rotated = time.monotonic()
    new = await wait(lambda: (k := key_of("rot", "k")) != old and k)
    await wait(lambda: status_code(gateway, new) == 200)
    # Both work while the overlap lasts, so clients move over without a gap; then the old
    # key stops, at the end of the window rather than at the next resync.
    assert time.monotonic() - rotated < ROTATION_OVERLAP_S, "too slow to see the overlap"
    assert await asyncio.to_thread(status_code, gateway, old) == 200
    await wait(lambda: status_code(gateway, old) == 401, ROTATION_OVERLAP_S + 10)
    assert time.monotonic() - rotated < ROTATION_OVERLAP_S + 10
    # The request stays, as GitOps tools keep it; it is recorded as handled, so later
    # reconciles (here a spec change) do not rotate again.
    assert tenant("rot")["metadata"]["annotations"]["llmrouter.io/rotate-keys"] == "k"
    custom().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        "rot",
        {"spec": {"apiKeys": [{"name": "k", "role": "user"}, {"name": "k2", "role": "user"}]}},
    )
    await wait(lambda: key_of("rot", "k2"))
    assert key_of("rot", "k") == new
    # A new value asks again.
    custom().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        "rot",
        {"metadata": {"annotations": {"llmrouter.io/rotate-keys": "k,2"}}},
    )
    await wait(lambda: key_of("rot", "k") not in (old, new))


def test_llamacpp_model_gets_deployment_service_and_status(operator: None) -> None:
    apps, core = client.AppsV1Api(ADMIN), client.CoreV1Api(ADMIN)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "llama"},
        "spec": {
            "llamacpp": {
                "model": {"url": "https://example.com/m.gguf"},
                "parallel": 2,
                "resources": {"gpus": 1},
            }
        },
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", body)
    deployment = eventually(lambda: apps.read_namespaced_deployment("llama", "default"))
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ModelDeployment", "llama", True)
    service = eventually(lambda: core.read_namespaced_service("llama", "default")).to_dict()
    assert service["spec"]["ports"][0]["port"] == 8080

    # Its servers take only gateway traffic: a key only the gateway has, and a policy.
    env = deployment.spec.template.spec.containers[0].env
    assert [(e.name, e.value_from.secret_key_ref.name) for e in env] == [
        ("LLAMA_API_KEY", server_key_secret_name("llama"))
    ]
    server_key = core.read_namespaced_secret(server_key_secret_name("llama"), "default").to_dict()
    assert server_key["metadata"]["owner_references"][0]["name"] == "llama"
    copy = eventually(
        lambda: core.read_namespaced_secret(
            provider_copy_name("default", server_key_secret_name("llama")), "llmrouter"
        )
    )
    assert copy.data == server_key["data"]
    networking = client.NetworkingV1Api(ADMIN)
    policy = networking.read_namespaced_network_policy("llama", "default").to_dict()["spec"]
    peer = policy["ingress"][0]["_from"][0]
    assert peer["namespace_selector"]["match_labels"] == {
        "kubernetes.io/metadata.name": "llmrouter"
    }
    assert peer["pod_selector"]["match_labels"]["app.kubernetes.io/component"] == "gateway"
    assert policy["pod_selector"]["match_labels"] == {"llmrouter.io/model": "llama"}
    [upstream] = eventually(lambda: published()["models"]["llama"]["upstreams"])
    assert upstream["credential"] == {
        "secret": server_key_secret_name("llama"),
        "key": "apiKey",
        "namespace": "default",
    }

    def ready() -> bool:
        found = custom().get_namespaced_custom_object(
            GROUP, VERSION, "default", "modeldeployments", "llama"
        )
        status = found.get("status", {}) if isinstance(found, dict) else {}
        return bool(status.get("readyReplicas") == 1 and status.get("engine") == "llamacpp")

    eventually(ready, 60)
    custom().delete_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", "llama")
    eventually(
        lambda: (
            not apps.list_namespaced_deployment(
                "default", label_selector="llmrouter.io/model=llama"
            ).items
        ),
        60,
    )
    # The gateway's copy of its key goes with it.
    copy_name = provider_copy_name("default", server_key_secret_name("llama"))
    eventually(
        lambda: (
            copy_name
            not in [
                s.metadata.name
                for s in core.list_namespaced_secret("llmrouter").items
                if s.metadata
            ]
        )
    )


def create_namespace(name: str) -> None:
    client.CoreV1Api(ADMIN).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )


def served_by(name: str) -> str | None:
    config = published()
    target = config["aliases"].get(name, name)
    route = config["models"].get(target)
    return route["source"] if route else None


def test_a_newer_model_in_another_namespace_cannot_take_a_name(operator: None) -> None:
    victim = external("hijack-victim", "https://victim.example/v1", "m")
    victim["spec"]["aliases"] = ["hijacked-alias"]
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", victim)
    eventually(lambda: served_by("hijacked-alias") == "ModelDeployment default/hijack-victim")
    create_namespace("intruder")
    # Namespace and name sort before the victim's: alphabetical order once gave it the names.
    thief = external("a-thief", "https://thief.example/v1", "m")
    thief["spec"]["servedName"] = "hijack-victim"
    alias_thief = external("a-alias-thief", "https://thief.example/v1", "m")
    alias_thief["spec"]["aliases"] = ["hijacked-alias"]
    for body in (thief, alias_thief):
        custom().create_namespaced_custom_object(
            GROUP, VERSION, "intruder", "modeldeployments", body
        )
    conflict = eventually(
        lambda: conditions_of("modeldeployments", "a-thief", "intruder").get("Conflict")
    )
    assert conflict["status"] == "True"
    assert "already claimed by ModelDeployment default/hijack-victim" in conflict["message"]
    found = eventually(
        lambda: conditions_of("modeldeployments", "a-alias-thief", "intruder").get("Conflict")
    )
    assert found["status"] == "True" and "spec.aliases[0]" in found["message"]
    assert served_by("hijack-victim") == "ModelDeployment default/hijack-victim"
    assert served_by("hijacked-alias") == "ModelDeployment default/hijack-victim"
    # The alias thief keeps its own name; the name thief is left out.
    assert served_by("a-alias-thief") == "ModelDeployment intruder/a-alias-thief"
    compiled = conditions_of("modeldeployments", "hijack-victim")["Compiled"]
    assert compiled["status"] == "True"


def test_broken_objects_drop_only_themselves_and_revocation_still_applies(
    operator: None,
) -> None:
    core = client.CoreV1Api(ADMIN)
    typo = external("cascade-model", "https://m.example/v1", "m")
    typo["spec"]["fallbacks"] = ["no-such-fallback"]
    # A Secret name of 253 characters: its copy's name once went over the limit and
    # stopped every compile.
    long_secret = "s" * 253
    core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=long_secret, labels=PROVIDER_CREDENTIAL),
            string_data={"token": "sk-long"},
        ),
    )
    typo["spec"]["external"]["apiKeySecretRef"] = {"name": long_secret, "key": "token"}
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", typo)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "cascade"},
        "spec": {
            "models": ["no-such-model", "cascade-model"],
            "apiKeys": [{"name": "keep"}, {"name": "revoke"}, {"name": "broken"}],
        },
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", body)
    keys = {k: eventually(lambda k=k: key_of("cascade", k)) for k in ("keep", "revoke", "broken")}
    # A labelled key Secret without its key: that key alone is left out.
    core.patch_namespaced_secret(
        api_key_secret_name("cascade", "broken"), "default", {"data": {"apiKey": None}}
    )

    def reported() -> Any:
        found = conditions_of("tenants", "cascade").get("Compiled")
        return found if found and "apiKeys[broken]" in found["message"] else None

    compiled = eventually(reported)
    assert compiled["status"] == "False"
    assert "spec.models[0]: unknown model 'no-such-model'" in compiled["message"]
    config = published()
    assert config["tenants"]["default/cascade"]["models"] == ["cascade-model"]
    assert config["models"]["cascade-model"]["fallbacks"] == []
    hashes = config["api_keys"]
    assert hash_api_key(keys["keep"]) in hashes and hash_api_key(keys["revoke"]) in hashes
    assert hash_api_key(keys["broken"]) not in hashes
    copies = core.list_namespaced_secret("llmrouter").to_dict()["items"]
    assert any(
        (c["metadata"]["annotations"] or {}).get("llmrouter.io/source-name") == long_secret
        for c in copies
    )
    fallback = conditions_of("modeldeployments", "cascade-model")["Compiled"]
    assert "spec.fallbacks[0]: unknown model 'no-such-fallback'" in fallback["message"]

    # Break it again just before a revocation: the revocation is published all the same.
    custom().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        "cascade",
        {"spec": {"apiKeys": [{"name": "keep"}, {"name": "broken"}]}},
    )
    eventually(lambda: hash_api_key(keys["revoke"]) not in published()["api_keys"])
    assert hash_api_key(keys["keep"]) in published()["api_keys"]


def test_key_secret_names_do_not_collide_and_long_tenant_names_work(operator: None) -> None:
    long_name = "t" * 120
    for name, key in (("a-b", "c"), ("a", "b-c"), (long_name, "k")):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"models": ["*"], "apiKeys": [{"name": key}]},
        }
        custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", body)
    first = eventually(lambda: key_of("a-b", "c"))
    second = eventually(lambda: key_of("a", "b-c"))
    third = eventually(lambda: key_of(long_name, "k"))
    assert len({first, second, third}) == 3

    def owners() -> Any:
        keys = published()["api_keys"]
        found = [keys.get(hash_api_key(k), {}).get("tenant") for k in (first, second, third)]
        return found if None not in found else None

    assert eventually(owners) == ["default/a-b", "default/a", f"default/{long_name}"]
    status = tenant(long_name)["status"]
    assert status["apiKeys"][0]["secretName"] == api_key_secret_name(long_name, "k")


def test_an_uncompilable_tenant_gets_a_condition_and_holds_back_no_one(operator: None) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "lost"},
        "spec": {"models": ["no-such-model"], "apiKeys": [{"name": "k"}]},
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", body)

    def condition() -> Any:
        conditions = tenant("lost").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Compiled"), None)

    found = eventually(condition)
    assert found["status"] == "False"
    assert "spec.models[0]: unknown model 'no-such-model'" in found["message"]
    # Only the broken reference is left out: the Tenant stays, with no model to call.
    tenants = published()["tenants"]
    assert "default/rot" in tenants and tenants["default/lost"]["models"] == []


def allowed(
    account: str, verb: str, resource: str, namespace: str | None = None, group: str = ""
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:llmrouter:{account}",
            groups=[
                "system:serviceaccounts",
                "system:serviceaccounts:llmrouter",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=namespace, group=group
            ),
        )
    )
    result = client.AuthorizationV1Api(ADMIN).create_subject_access_review(review)
    return bool(result.status and result.status.allowed)


def test_least_privilege(operator: None) -> None:
    assert allowed("llmrouter-gateway", "watch", "secrets", "llmrouter")
    assert not allowed("llmrouter-gateway", "list", "secrets", "default")
    assert not allowed("llmrouter-gateway", "create", "secrets", "llmrouter")
    assert allowed("llmrouter-operator", "patch", "tenants/status", group="llmrouter.io")
    assert not allowed("llmrouter-operator", "update", "tenants", group="llmrouter.io")
    assert not allowed("llmrouter-operator", "delete", "deployments", "default", "apps")
    assert not allowed("llmrouter-operator", "create", "pods", "default")
    assert allowed(
        "llmrouter-operator", "create", "networkpolicies", "default", "networking.k8s.io"
    )
    assert not allowed(
        "llmrouter-operator", "delete", "networkpolicies", "default", "networking.k8s.io"
    )


async def test_provider_key_from_a_secret_reaches_the_provider(
    gateway: str, upstream: FakeUpstream
) -> None:
    core = client.CoreV1Api(ADMIN)
    core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="provider-key", labels=PROVIDER_CREDENTIAL),
            string_data={"token": "sk-secret-1"},
        ),
    )
    body = external("secured", upstream.url, "upstream-model")
    body["spec"]["external"]["apiKeySecretRef"] = {"name": "provider-key", "key": "token"}
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", body)
    tenant_body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "cred"},
        "spec": {"models": ["secured"], "apiKeys": [{"name": "k"}]},
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", tenant_body)
    key = await wait(lambda: key_of("cred", "k"))
    await wait(lambda: status_code(gateway, key, "secured") == 200)
    assert upstream.seen[-1].headers["Authorization"] == "Bearer sk-secret-1"
    # The gateway's namespace holds a copy; the gateway never reads other namespaces.
    copy = core.read_namespaced_secret(provider_copy_name("default", "provider-key"), "llmrouter")
    assert set(copy.data or {}) == {"token"}
    # A Secret its owner did not label: never copied, never sent, its model left out.
    core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="unconsenting"), string_data={"token": "sk-other"}
        ),
    )
    borrowed = external("borrowed", upstream.url, "upstream-model")
    borrowed["spec"]["external"]["apiKeySecretRef"] = {"name": "unconsenting", "key": "token"}
    custom().create_namespaced_custom_object(
        GROUP, VERSION, "default", "modeldeployments", borrowed
    )

    def refused() -> Any:
        found = conditions_of("modeldeployments", "borrowed").get("Compiled")
        return found if found and found["status"] == "False" else None

    compiled = await wait(refused)
    assert "spec.external.apiKeySecretRef" in compiled["message"]
    assert "llmrouter.io/provider-credential=true" in compiled["message"]
    assert "borrowed" not in published()["models"]
    copies = core.list_namespaced_secret("llmrouter").to_dict()["items"]
    names = [s["metadata"]["name"] for s in copies]
    assert provider_copy_name("default", "unconsenting") not in names


async def test_tenant_status_shows_this_months_usage_and_budget(
    gateway: str, llama_chat: LlamaServer
) -> None:
    priced = external("priced", llama_chat.url, "tiny")
    priced["spec"]["pricing"] = {"inputPerMillion": "1000", "outputPerMillion": "2000"}
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", priced)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "paying"},
        "spec": {"models": ["priced"], "budget": {"monthlyUSD": "10"}, "apiKeys": [{"name": "k"}]},
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "tenants", body)
    key = await wait(lambda: key_of("paying", "k"))
    await wait(lambda: status_code(gateway, key, "priced") == 200)
    assert await asyncio.to_thread(status_code, gateway, key, "priced") == 200

    def usage() -> Any:
        found = tenant("paying").get("status", {})
        return found if found.get("usage", {}).get("requests") == 2 else None

    status = await wait(usage)
    used = status["usage"]
    assert used["inputTokens"] > 0 and used["outputTokens"] > 0
    cost = Decimal(used["costUSD"])
    assert (
        cost == (Decimal(used["inputTokens"]) * 1000 + Decimal(used["outputTokens"]) * 2000) / 10**6
    )
    assert Decimal(status["budgetRemainingUSD"]) == 10 - cost


async def test_an_experiment_reaches_a_verdict_and_rolls_back_a_failing_variant(
    gateway: str, llama_chat: LlamaServer
) -> None:
    # control: the real llama-server; candidate: a server that refuses every connection
    for name, url in (("exp-good", llama_chat.url), ("exp-bad", "http://127.0.0.1:9/v1")):
        custom().create_namespaced_custom_object(
            GROUP, VERSION, "default", "modeldeployments", external(name, url, "tiny")
        )
    custom().create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": "trial"},
            "spec": {"models": ["exp-good", "exp-bad"], "apiKeys": [{"name": "k"}]},
        },
    )
    experiment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": "swap"},
        "spec": {
            "model": "exp-good",
            "tenants": ["trial"],
            "unit": "request",
            "variants": [
                {"name": "control", "model": "exp-good", "weight": 50},
                {"name": "candidate", "model": "exp-bad", "weight": 50},
            ],
            "control": "control",
            "metrics": {
                "primary": {"name": "latency"},
                "guardrails": [{"name": "errorRate", "margin": "0.01"}],
            },
            "analysis": {"minUnitsPerVariant": 15, "interval": "1s"},
            "policy": {"onHarm": "Rollback"},
        },
    }
    custom().create_namespaced_custom_object(GROUP, VERSION, "default", "experiments", experiment)
    key = await wait(lambda: key_of("trial", "k"))
    await wait(lambda: "default/swap" in published().get("experiments", {}))

    async def send(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(n):
                resp = await http.post(
                    f"{gateway}/v1/chat/completions",
                    json={
                        "model": "exp-good",
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                seen[f"{resp.headers.get('x-llmrouter-experiment')} {resp.status_code}"] += 1
        return seen

    split = await send(80)
    failed = sum(n for k, n in split.items() if k.startswith("swap/candidate"))
    assert split["swap/control 200"] >= 15 and failed >= 15
    assert sum(split.values()) == 80 and "swap/candidate 200" not in split

    def swap() -> dict[str, Any]:
        found = custom().get_namespaced_custom_object(
            GROUP, VERSION, "default", "experiments", "swap"
        )
        assert isinstance(found, dict)
        return found

    def verdict() -> Any:
        status = swap().get("status", {})
        return status if status.get("routedTo") == "control" else None

    status = await wait(verdict)
    assert status["phase"] == "RolledBack"
    assert status["verdict"]["decision"] == "Rollback" and status["verdict"]["decidedAt"]
    assert "errorRate" in status["verdict"]["reason"]
    # the verdict came at the first look with 15 units a variant; after it, traffic went to
    # control and was no longer measured
    variants = {v["name"]: v for v in status["variants"]}
    assert min(v["units"] for v in variants.values()) >= 15
    assert variants["control"]["units"] + variants["candidate"]["units"] <= 80
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["GuardrailBreached"] == "True" and conditions["Concluded"] == "True"
    assert swap()["metadata"]["generation"] == 1  # the spec was never written
    await wait(lambda: published()["experiments"]["default/swap"]["routed_to"] == "control")
    await wait(lambda: asyncio.run(send(1)) == Counter({"swap/control 200": 1}), 30)
    after = await send(10)
    assert after == Counter({"swap/control 200": 10})

    # what `kubectl get experiments` shows: the printer columns, as the API server tabulates
    raw = custom().list_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "experiments",
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        _preload_content=False,
    )
    table = json.loads(raw.data)  # type: ignore[attr-defined]
    columns = [c["name"] for c in table["columnDefinitions"]]
    row = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert row["Phase"] == "RolledBack" and row["Winner"] == "control"
