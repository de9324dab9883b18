"""Resource YAML and keys used by the gateway tests."""

from __future__ import annotations

from pathlib import Path

LOCAL_MODEL = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: local}
spec:
  llamacpp: {model: {url: "https://example.invalid/m.gguf"}}
  pricing: {inputPerMillion: "2", outputPerMillion: "4"}
---
"""
"""A model named `local` at $2 and $4 per million input and output tokens."""

DEV_KEY = "llmr_test_developer_key_0000000001"
ANALYST_KEY = "llmr_test_analyst_key_00000000002"
OTHER_TENANT_KEY = "llmr_test_other_tenant_key_000003"

MODELS = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: local}
spec:
  aliases: [chat]
  llamacpp:
    model: {url: "https://example.invalid/tiny.gguf"}
  pricing: {inputPerMillion: "2", outputPerMillion: "4"}
  timeouts: {connect: 1s, firstToken: 2s, total: 5s}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: provider}
spec:
  external:
    provider: openai-compatible
    baseURL: {upstream}
    model: upstream-model-name
    apiKeySecretRef: {name: provider, key: token}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: secret-model}
spec:
  external: {provider: openai-compatible, baseURL: {upstream}, model: x}
"""

TENANTS = """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  models: [chat, provider]
  apiKeys:
    - {name: dev, role: developer}
    - {name: reader, role: analyst}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: other, namespace: team-b}
spec:
  models: [secret-model]
  apiKeys: [{name: main, role: user}]
"""

KEYS = f"""
acme:
  dev: {DEV_KEY}
  reader: {ANALYST_KEY}
team-b/other:
  main: {OTHER_TENANT_KEY}
"""

PROVIDER_TOKEN = "provider-token-never-logged"


def write_config(directory: Path, upstream_url: str) -> tuple[Path, Path]:
    """Write resources into ``directory``/resources and a keys file; return both paths."""
    resources = directory / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    (resources / "models.yaml").write_text(MODELS.replace("{upstream}", upstream_url))
    (resources / "tenants.yaml").write_text(TENANTS)
    keys = directory / "keys.yaml"
    keys.write_text(KEYS)
    return resources, keys
