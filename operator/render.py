"""Child objects of each resource, as plain dicts: pure functions, tested without a cluster.

Handlers add ownerReferences (kopf.adopt) and apply what these return.
"""

from __future__ import annotations

import base64
from typing import Any

from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.compile import LLAMACPP_PORT
from llmrouter.operator.names import (
    SERVER_KEY,
    api_key_secret_name,
    label_value,
    provider_copy_name,
    server_key_secret_name,
)
from llmrouter.operator.settings import OperatorSettings

MODEL_DIR = "/models"
DOWNLOADER_IMAGE = "curlimages/curl:8.11.1"
VERIFIED_FETCH = (
    'path="$1" sum="$2"; shift 2; curl "$@" '
    '&& echo "$sum  $path" | sha256sum -c - || { rm -f "$path"; exit 1; }'
)
"""DOWNLOADER_IMAGE's shell: ``curl ARGS`` then the file checked against the digest."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "llmrouter"}
API_KEY_LABEL = "llmrouter.io/api-key"
TENANT_LABEL = "llmrouter.io/tenant"
SERVER_KEY_LABEL = "llmrouter.io/server-key"
PREVIOUS_KEY_ANNOTATION = "llmrouter.io/previous-key-sha256"
"""On a rotated key Secret: the hash of the key it replaced, which works until…"""
PREVIOUS_KEY_UNTIL_ANNOTATION = "llmrouter.io/previous-key-until"
SERVER_KEY_ENV = "LLAMA_API_KEY"
"""llama-server's environment form of --api-key: the key stays off its command line."""
GATEWAY_CONFIG_KEY = "config.json"


def model_labels(md: ModelDeployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llama-server",
        "app.kubernetes.io/instance": md.metadata.name,
        "llmrouter.io/model": md.metadata.name,
        **MANAGED_BY,
    }


def llama_server_args(md: ModelDeployment, model_path: str) -> list[str]:
    spec = md.spec.llamacpp
    assert spec is not None
    return [
        "--model",
        model_path,
        "--host",
        "0.0.0.0",
        "--port",
        str(LLAMACPP_PORT),
        "--alias",
        md.served_name,
        # llama-server splits --ctx-size among its slots: each request gets contextSize.
        "--ctx-size",
        str(spec.context_size * spec.parallel),
        "--parallel",
        str(spec.parallel),
        "--n-gpu-layers",
        str(spec.gpu_layers),
        "--metrics",
        *(["--embeddings", "--pooling", "mean"] if spec.embeddings else []),
        *spec.extra_args,
    ]


def render_deployment(md: ModelDeployment) -> dict[str, Any]:
    """The llama-server Deployment of a ``llamacpp`` ModelDeployment."""
    spec = md.spec.llamacpp
    assert spec is not None, "only llamacpp models run in the cluster"
    labels = model_labels(md)
    volumes: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = []
    if spec.model.pvc is not None:
        volumes = [
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": spec.model.pvc.claim_name, "readOnly": True},
            }
        ]
        model_path = f"{MODEL_DIR}/{spec.model.pvc.path.lstrip('/')}"
    else:
        volumes = [{"name": "models", "emptyDir": {}}]
        model_path = f"{MODEL_DIR}/model.gguf"
        fetch = [
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--retry",
            "5",
            "--output",
            model_path,
            str(spec.model.url),
        ]
        init_containers = [
            {
                "name": "fetch-model",
                "image": DOWNLOADER_IMAGE,
                **(
                    {"args": fetch}
                    if spec.model.sha256 is None
                    else {
                        # A file that is not the one named never reaches llama-server: the
                        # init container fails and the kubelet fetches again. Path, URL and
                        # digest go in as arguments, never into the script's text.
                        "command": ["sh", "-c", VERIFIED_FETCH, "fetch-model"],
                        "args": [model_path, spec.model.sha256.lower(), *fetch],
                    }
                ),
                "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR}],
            }
        ]
    limits = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus:
        limits["nvidia.com/gpu"] = str(spec.resources.gpus)
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
    container = {
        "name": "llama-server",
        "image": spec.image,
        "args": llama_server_args(md, model_path),
        "ports": [{"name": "http", "containerPort": LLAMACPP_PORT}],
        "resources": {
            "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
            "limits": limits,
        },
        # Only the gateway has this key: a client that reaches the pod some other way
        # cannot skip the gateway's limits and budgets. /health stays open for probes.
        "env": [
            {
                "name": SERVER_KEY_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": server_key_secret_name(md.metadata.name),
                        "key": SERVER_KEY,
                    }
                },
            }
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 60, "failureThreshold": 6},
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR, "readOnly": spec.model.pvc is not None}
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": md.metadata.name,
            "namespace": md.metadata.namespace,
            "labels": labels,
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"llmrouter.io/model": md.metadata.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": init_containers,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def render_service(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": md.metadata.name,
            "namespace": md.metadata.namespace,
            "labels": model_labels(md),
        },
        "spec": {
            "selector": {"llmrouter.io/model": md.metadata.name},
            "ports": [{"name": "http", "port": LLAMACPP_PORT, "targetPort": "http"}],
        },
    }


def render_server_key_secret(md: ModelDeployment, key: str) -> dict[str, Any]:
    """The key the llama-servers of ``md`` require; the gateway gets a copy of it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": server_key_secret_name(md.metadata.name),
            "namespace": md.metadata.namespace,
            "labels": {**model_labels(md), SERVER_KEY_LABEL: "true"},
        },
        "data": {SERVER_KEY: base64.b64encode(key.encode()).decode()},
    }


def render_network_policy(md: ModelDeployment, gateway_namespace: str) -> dict[str, Any]:
    """Only gateway pods may reach the llama-servers of ``md``: the key alone would still
    let anyone in the cluster try it, and tie up the servers' slots while failing."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": md.metadata.name,
            "namespace": md.metadata.namespace,
            "labels": model_labels(md),
        },
        "spec": {
            "podSelector": {"matchLabels": {"llmrouter.io/model": md.metadata.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": gateway_namespace}
                            },
                            "podSelector": {"matchLabels": GATEWAY_SELECTOR},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": LLAMACPP_PORT}],
                }
            ],
        },
    }


def render_api_key_secret(
    namespace: str, tenant: str, key_name: str, api_key: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": api_key_secret_name(tenant, key_name),
            "namespace": namespace,
            # Label values hold 63 characters, tenant names 253: a long one is cut and hashed.
            "labels": {TENANT_LABEL: label_value(tenant), API_KEY_LABEL: key_name, **MANAGED_BY},
        },
        "data": {"apiKey": base64.b64encode(api_key.encode()).decode()},
    }


PROVIDER_CREDENTIAL_LABEL = "llmrouter.io/provider-credential"
"""``"true"`` on a Secret: its owner lets ModelDeployments of its namespace send it to their
provider. The operator copies, and the gateway sends, no other Secret. Also on the copies."""
SOURCE_NAMESPACE = "llmrouter.io/source-namespace"
SOURCE_NAME = "llmrouter.io/source-name"


def render_provider_secret_copy(
    gateway_namespace: str, source_namespace: str, name: str, data: dict[str, str]
) -> dict[str, Any]:
    """The keys a Secret's ModelDeployments name, copied (still base64) to the gateway's
    namespace: one object, so that applying it never drops a key another model needs."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": provider_copy_name(source_namespace, name),
            "namespace": gateway_namespace,
            "labels": {PROVIDER_CREDENTIAL_LABEL: "true", **MANAGED_BY},
            "annotations": {SOURCE_NAMESPACE: source_namespace, SOURCE_NAME: name},
        },
        "data": dict(sorted(data.items())),
    }


def render_gateway_config_secret(
    name: str, namespace: str, config: GatewayConfig
) -> dict[str, Any]:
    """The compiled configuration: key hashes only, never keys."""
    text = config.model_dump_json()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/component": "gateway-config", **MANAGED_BY},
            "annotations": {"llmrouter.io/config-fingerprint": config.fingerprint()},
        },
        "data": {GATEWAY_CONFIG_KEY: base64.b64encode(text.encode()).decode()},
    }


GATEWAY_PORT = 8000
# `llmrouter gateway` serves /metrics here by default (its --metrics-port).
GATEWAY_METRICS_PORT = 9090
# The llmrouter image's user (hack/oci_image.py), and what the chart's own pods get: the
# gateway needs no root, no capability and no writable root file system (only /tmp).
GATEWAY_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
GATEWAY_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
GATEWAY_SELECTOR = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/name": "llmrouter"}


def gateway_labels() -> dict[str, str]:
    return {**GATEWAY_SELECTOR, **MANAGED_BY}


def render_gateway_deployment(settings: OperatorSettings) -> dict[str, Any]:
    """The gateway pods: they watch the compiled configuration Secret and serve the API."""
    args = [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        str(GATEWAY_PORT),
        "--config-secret",
        f"{settings.namespace}/{settings.config_secret}",
    ]
    if settings.gateway_state_url:
        args += ["--state", settings.gateway_state_url]
        if settings.gateway_workers > 1:
            args += ["--workers", str(settings.gateway_workers)]
    if settings.gateway_max_in_flight != GatewaySettings.max_in_flight:
        args += ["--max-in-flight", str(settings.gateway_max_in_flight)]
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "llmrouter-gateway",
            "namespace": settings.namespace,
            "labels": gateway_labels(),
        },
        "spec": {
            "replicas": settings.gateway_replicas,
            "selector": {"matchLabels": dict(GATEWAY_SELECTOR)},
            "template": {
                "metadata": {"labels": gateway_labels()},
                "spec": {
                    "serviceAccountName": settings.gateway_service_account,
                    # A pod being replaced drains (--drain-timeout): no SIGKILL before that.
                    "terminationGracePeriodSeconds": int(GatewaySettings.drain_timeout_s) + 5,
                    "securityContext": GATEWAY_POD_SECURITY,
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                    "containers": [
                        {
                            "name": "gateway",
                            "image": settings.gateway_image,
                            "args": args,
                            "ports": [
                                {"name": "http", "containerPort": GATEWAY_PORT},
                                {"name": "metrics", "containerPort": GATEWAY_METRICS_PORT},
                            ],
                            "securityContext": GATEWAY_CONTAINER_SECURITY,
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            "readinessProbe": probe,
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 10,
                            },
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                        }
                    ],
                },
            },
        },
    }


def render_gateway_service(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "llmrouter-gateway",
            "namespace": settings.namespace,
            "labels": gateway_labels(),
        },
        "spec": {
            "selector": dict(GATEWAY_SELECTOR),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
