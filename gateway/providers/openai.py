"""OpenAI and every server speaking its API (llama-server, vLLM, Ollama), and Azure OpenAI."""

from __future__ import annotations

from llmrouter.gateway.config import Upstream
from llmrouter.gateway.openai_request import ModelRequest, Operation, upstream_body


class OpenAIAdapter:
    def url(self, upstream: Upstream, operation: Operation) -> str:
        return upstream.base_url + operation.value

    def headers(self, secret: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def body(self, req: ModelRequest, upstream: Upstream) -> bytes:
        return upstream_body(req, upstream)

    def response(self, raw: bytes, req: ModelRequest) -> bytes:
        return raw

    def stream(self, req: ModelRequest) -> None:
        return None


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure names a deployment in the path, wants an api-version, and an api-key header."""

    def url(self, upstream: Upstream, operation: Operation) -> str:
        deployment = upstream.deployment or upstream.model
        return (
            f"{upstream.base_url}/openai/deployments/{deployment}{operation.value}"
            f"?api-version={upstream.api_version}"
        )

    def headers(self, secret: str | None) -> dict[str, str]:
        return {"api-key": secret} if secret else {}
