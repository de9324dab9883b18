"""GET /openapi.json: it lists exactly the routes the application registers, and a bounded,
seeded property-based run (schemathesis) against `llmrouter serve` in front of the fake
upstream finds no 5xx, no error that is not OpenAI-shaped, and no answer (status, content
type, body) the document does not describe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema

from llmrouter.gateway.app import create_app
from llmrouter.gateway.config import GatewayConfig
from llmrouter.gateway.openapi import SCHEMAS, document
from llmrouter.gateway.settings import GatewaySettings
from llmrouter.gateway.store import ConfigStore
from tests.support.config import MODELS
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import tail
from tests.support.serve import ServeProcess

ADMIN_KEY = "llmr_fuzz_admin_key_0000000000000001"
TENANT = """
apiVersion: llmrouter.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  models: [chat, provider]
  apiKeys: [{name: root, role: admin}]
"""
EXAMPLES_PER_OPERATION = 25
"""Per operation and generation mode: 18 operations and 2 modes, a few seconds in all."""

OPENAI_ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMAS = {
    # Anthropic's SDK reads Anthropic's error shape from the Messages API's own checks.
    "/v1/messages": {"anyOf": [OPENAI_ERROR, {"$ref": "#/components/schemas/AnthropicError"}]},
}
ERROR = jsonschema_rs.validator_for(SCHEMAS["Error"])
ANTHROPIC_ERROR = jsonschema_rs.validator_for(SCHEMAS["AnthropicError"])


def test_the_document_lists_every_route_the_app_registers() -> None:
    app = create_app(GatewaySettings(), ConfigStore(GatewayConfig()))
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # HEAD comes with each GET
    }
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert registered - documented == set(), "routes missing from gateway/openapi.py"
    assert documented - registered == set(), "documented routes the gateway does not have"
    assert len(registered) >= 18


def _operations() -> Iterator[tuple[str, str]]:
    for path, ops in document()["paths"].items():
        for method in ops:
            yield method, path


def test_every_reference_resolves_and_every_operation_describes_its_errors() -> None:
    doc = document()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in SCHEMAS, ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == ERROR_SCHEMAS.get(path, OPENAI_ERROR), (method, path)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeUpstream
) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "models.yaml").write_text(MODELS.replace("{upstream}", upstream_server.url))
    (folder / "tenant.yaml").write_text(TENANT)
    (folder / "keys.yaml").write_text(f"acme:\n  root: {ADMIN_KEY}\n")
    args = [
        *("-f", str(folder / "models.yaml"), "-f", str(folder / "tenant.yaml")),
        *("--keys-file", str(folder / "keys.yaml")),
        *("--endpoint", f"local={upstream_server.url}"),
        *("--max-body-bytes", str(256 * 1024)),
    ]
    with ServeProcess(args, folder / "gateway.log") as proc:
        yield proc
    log = proc.log.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, tail(proc.log, 80)


def test_openapi_json_is_served_without_a_key(gateway: ServeProcess) -> None:
    answer = httpx.get(f"{gateway.url}/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == document()
    assert answer.json()["openapi"] == "3.1.0"


def openai_shaped(response: Response, path: str) -> None:
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        response.status_code,
        response.content[:200],
    )
    body = response.json()
    if path in ERROR_SCHEMAS and ANTHROPIC_ERROR.is_valid(body):
        return
    ERROR.validate(body)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_fuzz_finds_no_5xx_and_only_openai_shaped_errors(
    gateway: ServeProcess, upstream: FakeUpstream
) -> None:
    schema = schemathesis.openapi.from_dict(httpx.get(f"{gateway.url}/openapi.json").json())
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    seen: dict[int, int] = {}
    started = time.monotonic()

    def call(case: Case[Any]) -> None:
        response = case.call(base_url=gateway.url, headers=auth, timeout=10)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
        openai_shaped(response, case.operation.path)
        case.validate_response(response, checks=CHECKS)

    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == len(list(_operations()))
    for operation in operations:
        # The document's own examples first: the valid requests a user sends.
        for case in _examples(schema, operation):
            call(case)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy)
            def run(case: Case[Any]) -> None:
                call(case)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # An operation without parameters or a body has no invalid input to make.
                assert mode is GenerationMode.NEGATIVE
    # The run reached the model server, and was refused for every kind of reason.
    assert seen.get(200, 0) > 0 and upstream.seen, seen
    assert {400, 403, 404} <= set(seen), seen
    # About 15 s on an idle 2-core machine; the bound only catches a run that grew unbounded.
    assert time.monotonic() - started < 90


def _examples(schema: BaseSchema, operation: APIOperation[Any, Any, Any, Any]) -> list[Case[Any]]:
    """Valid requests built from the document's own examples (a stream too, where the
    operation streams): what a user sends, which random data seldom is."""
    described = document()["paths"][operation.path][operation.method.lower()]
    path_parameters = {
        p["name"]: p.get("example", "none") for p in described.get("parameters", [])
        if p["in"] == "path"
    }  # fmt: skip
    content = described.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "example" not in content:
        return [schema.make_case(operation=operation, path_parameters=path_parameters)]
    bodies = [content["example"]]
    if "text/event-stream" in described["responses"]["200"]["content"]:
        bodies.append({**content["example"], "stream": True})
    return [
        schema.make_case(operation=operation, body=body, media_type="application/json")
        for body in bodies
    ]


def test_a_valid_chat_request_from_the_document_is_answered(
    gateway: ServeProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # The examples in the document are requests the gateway serves.
    schema = SCHEMAS["ChatCompletionRequest"]["properties"]
    body = {"model": schema["model"]["examples"][0], "messages": schema["messages"]["examples"][0]}
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert answer.status_code == 200, answer.text
    assert len(upstream.seen) == 1
