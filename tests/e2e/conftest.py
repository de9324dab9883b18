from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmrouter.gateway.app import create_app
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from llmrouter.standalone import StandaloneSource
from tests.support.llama import LlamaServer, llama_server_binary, tiny_model
from tests.support.serve import serving

# Kopf timers take their interval when the operator's modules are first imported, by
# whichever of these test modules starts an operator first: every one gets the short ones.
os.environ.setdefault("LLMROUTER_USAGE_INTERVAL", "0.5")
os.environ.setdefault("LLMROUTER_EXPERIMENT_INTERVAL", "0.5")

KEY = "llmr_e2e_developer_key_000000001"
RESOURCES = """
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: tiny}
spec:
  aliases: [chat]
  llamacpp: {model: {url: "https://example.invalid/tiny.gguf"}, parallel: 4}
  pricing: {inputPerMillion: "1", outputPerMillion: "2"}
---
apiVersion: llmrouter.io/v1alpha1
kind: ModelDeployment
metadata: {name: tiny-embed}
spec:
  llamacpp: {model: {url: "https://example.invalid/tiny.gguf"}, embeddings: true}
---
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: e2e}
spec:
  models: ["*"]
  apiKeys: [{name: dev, role: developer}]
"""


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llama")


@pytest.fixture(scope="session")
def model_file(llama_dir: Path) -> Path:
    return tiny_model(llama_dir)


@pytest.fixture(scope="session")
def llama_chat(llama_dir: Path, model_file: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(
        llama_server_binary(),
        model_file,
        llama_dir / "chat.log",
        "--ctx-size",
        "2048",
        "--parallel",
        "4",
        "--metrics",
    )
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def llama_embed(llama_dir: Path, model_file: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(
        llama_server_binary(),
        model_file,
        llama_dir / "embed.log",
        "--ctx-size",
        "512",
        "--embeddings",
        "--pooling",
        "mean",
    )
    yield server.start()
    server.stop()


@pytest.fixture
async def gateway(
    tmp_path: Path, llama_chat: LlamaServer, llama_embed: LlamaServer
) -> AsyncIterator[str]:
    (tmp_path / "resources.yaml").write_text(RESOURCES)
    (tmp_path / "keys.yaml").write_text(f"e2e:\n  dev: {KEY}\n")
    source = StandaloneSource(
        [tmp_path / "resources.yaml"],
        tmp_path / "keys.yaml",
        {"tiny": [llama_chat.url], "tiny-embed": [llama_embed.url]},
    )
    app = create_app(GatewaySettings(), ConfigStore(source.load()))
    async with serving(app) as url:
        yield url
