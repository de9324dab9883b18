"""Renderers compared as dicts: what the operator would apply, without a cluster."""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from llmrouter.operator.api import ModelDeployment
from llmrouter.operator.compile import Resources, compile_config
from llmrouter.operator.names import (
    api_key_secret_name,
    label_value,
    provider_copy_name,
    server_key_secret_name,
)
from llmrouter.operator.render import (
    render_api_key_secret,
    render_deployment,
    render_gateway_config_secret,
    render_gateway_deployment,
    render_network_policy,
    render_server_key_secret,
    render_service,
)
from llmrouter.operator.settings import OperatorSettings


def md(**llamacpp: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "llama", "namespace": "ml"},
            "spec": {
                "servedName": "llama-3-8b",
                "llamacpp": {"model": {"url": "https://example.com/m.gguf"}, **llamacpp},
            },
        }
    )


def test_deployment_from_url() -> None:
    d = render_deployment(
        md(
            parallel=4,
            contextSize=8192,
            replicas=2,
            resources={"gpus": 1, "cpu": "4", "memory": "16Gi"},
        )
    )
    labels = {
        "app.kubernetes.io/name": "llama-server",
        "app.kubernetes.io/instance": "llama",
        "llmrouter.io/model": "llama",
        "app.kubernetes.io/managed-by": "llmrouter",
    }
    assert d["metadata"] == {"name": "llama", "namespace": "ml", "labels": labels}
    assert d["spec"]["replicas"] == 2
    pod = d["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "models", "emptyDir": {}}]
    assert pod["initContainers"][0]["args"][-3:] == [
        "--output",
        "/models/model.gguf",
        "https://example.com/m.gguf",
    ]
    c = pod["containers"][0]
    assert c["args"] == [
        "--model",
        "/models/model.gguf",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--alias",
        "llama-3-8b",
        "--ctx-size",
        "32768",
        "--parallel",
        "4",
        "--n-gpu-layers",
        "999",
        "--metrics",
    ]
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # The key comes from the environment, not the command line that `ps` shows.
    assert c["env"] == [
        {
            "name": "LLAMA_API_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": server_key_secret_name("llama"), "key": "apiKey"}
            },
        }
    ]


def test_deployment_from_pvc_mounts_read_only_and_fetches_nothing() -> None:
    d = render_deployment(
        md(
            model={"pvc": {"claimName": "models", "path": "/q/m.gguf"}},
            embeddings=True,
            extraArgs=["--flash-attn", "on"],
        )
    )
    pod = d["spec"]["template"]["spec"]
    assert pod["initContainers"] == []
    assert pod["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    ]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["--model", "/models/q/m.gguf"]
    assert args[-5:] == ["--embeddings", "--pooling", "mean", "--flash-attn", "on"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]


def test_service_selects_the_deployment_pods() -> None:
    s = render_service(md())
    assert s["spec"] == {
        "selector": {"llmrouter.io/model": "llama"},
        "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
    }


def test_key_secret_and_config_secret() -> None:
    secret = render_api_key_secret("acme-ns", "acme", "ci", "llmr_abc")
    assert secret["metadata"]["name"] == api_key_secret_name("acme", "ci")
    assert secret["metadata"]["name"].startswith("llmrouter-key-acme-ci-")
    assert base64.b64decode(secret["data"]["apiKey"]) == b"llmr_abc"
    config = compile_config(Resources(models=[md()]))
    rendered = render_gateway_config_secret("llmrouter-gateway-config", "llmrouter", config)
    text = base64.b64decode(rendered["data"]["config.json"]).decode()
    assert json.loads(text)["models"]["llama-3-8b"]["engine"] == "llamacpp"
    assert rendered["metadata"]["annotations"]["llmrouter.io/config-fingerprint"] == (
        config.fingerprint()
    )


def test_gateway_deployment_watches_the_config_secret() -> None:
    from llmrouter.operator.render import render_gateway_deployment, render_gateway_service
    from llmrouter.operator.settings import OperatorSettings

    settings = OperatorSettings(
        namespace="gw",
        config_secret="cfg",
        gateway_image="img:1",
        gateway_replicas=3,
        gateway_state_url="redis://r:6379/0",
        gateway_workers=4,
        gateway_service_account="sa",
    )
    d = render_gateway_deployment(settings)
    pod = d["spec"]["template"]["spec"]
    assert (d["metadata"]["namespace"], d["spec"]["replicas"]) == ("gw", 3)
    assert pod["serviceAccountName"] == "sa"
    assert pod["containers"][0]["args"] == [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--config-secret",
        "gw/cfg",
        "--state",
        "redis://r:6379/0",
        "--workers",
        "4",
    ]
    # Workers share their limits through the state URL: without one, one process.
    alone = render_gateway_deployment(dataclasses.replace(settings, gateway_state_url=None))
    assert alone["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "gw/cfg"
    service = render_gateway_service(settings)
    assert service["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]


def test_provider_secret_copy_keeps_every_named_key() -> None:
    from llmrouter.operator.render import render_provider_secret_copy

    copy = render_provider_secret_copy("gw", "team", "openai", {"b": "Yg==", "a": "YQ=="})
    assert copy["metadata"]["name"] == provider_copy_name("team", "openai")
    assert copy["metadata"]["annotations"] == {
        "llmrouter.io/source-namespace": "team",
        "llmrouter.io/source-name": "openai",
    }
    assert copy["data"] == {"a": "YQ==", "b": "Yg=="}


def test_server_key_secret_is_the_one_the_deployment_reads() -> None:
    secret = render_server_key_secret(md(), "llmr_server")
    ref = render_deployment(md())["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert secret["metadata"]["name"] == ref["valueFrom"]["secretKeyRef"]["name"]
    assert secret["metadata"]["namespace"] == "ml"
    assert secret["metadata"]["labels"]["llmrouter.io/server-key"] == "true"
    assert secret["data"] == {"apiKey": base64.b64encode(b"llmr_server").decode()}


def test_network_policy_admits_only_gateway_pods() -> None:
    policy = render_network_policy(md(), "gw")
    assert policy["metadata"]["namespace"] == "ml"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"llmrouter.io/model": "llama"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}},
                        "podSelector": {
                            "matchLabels": {
                                "app.kubernetes.io/component": "gateway",
                                "app.kubernetes.io/name": "llmrouter",
                            }
                        },
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }
        ],
    }
    # The gateway pods the operator runs are the ones it admits.
    gateway = render_gateway_deployment(OperatorSettings(namespace="gw"))
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pods = render_deployment(md())["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods.items()


def test_derived_names_never_collide_and_fit() -> None:
    # Joined with "-", these two pairs used to give one Secret name.
    assert api_key_secret_name("a-b", "c") != api_key_secret_name("a", "b-c")
    assert provider_copy_name("a-b", "c") != provider_copy_name("a", "b-c")
    long = "t" * 253
    for name in (
        api_key_secret_name(long, "k" * 63),
        provider_copy_name("n" * 63, long),
        server_key_secret_name(long),
    ):
        assert len(name) <= 253
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name)
    assert api_key_secret_name(long, "a") != api_key_secret_name(long, "b")


def test_label_values_fit_and_stay_distinct() -> None:
    assert label_value("acme") == "acme"
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    for value in (label_value(long_a), label_value(long_b)):
        assert len(value) <= 63
        assert re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value)
    assert label_value(long_a) != label_value(long_b)
    secret = render_api_key_secret("ns", "y" * 253, "k", "llmr_abc")
    assert secret["metadata"]["labels"]["llmrouter.io/tenant"] == label_value("y" * 253)


def _fetch(pod: dict[str, Any], models: Path) -> subprocess.CompletedProcess[str]:
    """The init container's command run here, with /models pointing at ``models``."""
    init = pod["initContainers"][0]
    argv = [a.replace("/models", str(models)) for a in init["command"] + init["args"]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_model_over_plain_http_is_fetched_only_with_its_digest(tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    import pydantic
    import pytest

    (tmp_path / "m.gguf").write_bytes(b"GGUF the real weights")
    good = hashlib.sha256(b"GGUF the real weights").hexdigest()
    with pytest.raises(pydantic.ValidationError, match="plain http needs sha256"):
        md(model={"url": "http://mirror.example/m.gguf"})

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/m.gguf"
    try:
        models = tmp_path / "models"
        models.mkdir()
        pod = render_deployment(md(model={"url": url, "sha256": good.upper()}))
        pod = pod["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["args"][:2] == ["/models/model.gguf", good]
        assert _fetch(pod, models).returncode == 0
        assert (models / "model.gguf").read_bytes() == b"GGUF the real weights"

        (models / "model.gguf").unlink()
        swapped = render_deployment(md(model={"url": url, "sha256": "0" * 64}))
        failed = _fetch(swapped["spec"]["template"]["spec"], models)
        assert failed.returncode != 0
        assert not (models / "model.gguf").exists()
    finally:
        server.shutdown()
