"""The gateway's API as an OpenAPI 3.1 document, served at ``GET /openapi.json`` without a key.

Written by hand from a small description of each route: a test compares its operations with
the routes the application registers, so that neither drifts from the other, and a
property-based run (schemathesis) checks the gateway's answers against it.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from aiohttp import web

from llmrouter import __version__

openapi_routes = web.RouteTableDef()

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_STRING_OR_STRINGS: Schema = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    ]
}
_MAX_TOKENS: Schema = {"type": "integer", "minimum": 1}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "description": "Every error the gateway answers, whatever the route or the cause.",
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code", "param"],
                "additionalProperties": False,
                "properties": {
                    "message": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "code": {"type": ["string", "null"]},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["chat"]},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"role": {"type": "string"}, "content": {}},
                },
                "examples": [[{"role": "user", "content": "Say hello"}]],
            },
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": _MAX_TOKENS,
            "max_completion_tokens": _MAX_TOKENS,
            "temperature": {"type": "number"},
            "user": {"type": "string"},
            "metadata": {
                "type": "object",
                "description": "``task_type`` and other entries may pick a routing rule.",
            },
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["chat"]},
            "prompt": {**_STRING_OR_STRINGS, "examples": ["Say hello"]},
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": _MAX_TOKENS,
            "temperature": {"type": "number"},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["chat"]},
            "input": {**_STRING_OR_STRINGS, "examples": ["Say hello"]},
            "stream": {"const": False},
        },
    },
    "ResponseRequest": {
        "description": "OpenAI's Responses API, served on the chat completions pipeline.",
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["chat"]},
            "input": {
                "oneOf": [{"type": "string"}, {"type": "array", "minItems": 1}],
                "examples": ["Say hello"],
            },
            "instructions": {"type": "string"},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "previous_response_id": {"type": "string"},
            "max_output_tokens": _MAX_TOKENS,
            "metadata": {"type": "object"},
            "tools": {"type": "array"},
            "temperature": {"type": "number"},
        },
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "deleted": {"const": True},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "array"},
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["object", "tenant", "data", "next"],
        "properties": {
            "object": {"const": "list"},
            "tenant": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
            "next": {
                "type": ["string", "null"],
                "description": "The cursor of the next page, as the after parameter.",
            },
        },
    },
    "MessageRequest": {
        "description": "Anthropic's Messages API, served on the chat completions pipeline.",
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["chat"]},
            "max_tokens": {**_MAX_TOKENS, "examples": [64]},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"role": {"enum": ["user", "assistant"]}, "content": {}},
                },
                "examples": [[{"role": "user", "content": "Say hello"}]],
            },
            "system": {},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "top_k": {"type": "integer"},
            "stream": {"type": "boolean"},
            "tools": {"type": "array"},
            "tool_choice": {},
            "metadata": {"type": "object"},
            "thinking": {},
            "service_tier": {},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": {"type": "string"},
            "content": {"type": "array"},
            "stop_reason": {"type": ["string", "null"]},
            "usage": {"type": "object"},
        },
    },
    "AnthropicError": {
        "description": "Errors the Messages API answers from its own checks, in Anthropic's "
        "shape (the gateway's checks before it, such as authentication, answer Error).",
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "SLOReport": {
        "type": "object",
        "required": ["tenant", "source", "approximate", "evaluatedAt", "policies"],
        "properties": {
            "tenant": {"type": "string"},
            "source": {"type": "string"},
            "approximate": {"type": "boolean"},
            "evaluatedAt": {"type": "string", "format": "date-time"},
            "policies": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ChatCompletion": {
        "description": "The model server's answer, relayed.",
        "type": "object",
        "required": ["choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "Completion": {
        "description": "The model server's answer, relayed.",
        "type": "object",
        "required": ["choices"],
        "properties": {
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "Embeddings": {
        "description": "The model server's answer, relayed.",
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "FeedbackRequest": {
        "type": "object",
        "required": ["request_id", "score"],
        "properties": {
            "request_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "The x-llmrouter-request-id of an answer of an experiment.",
            },
            "score": {"type": "number", "minimum": -1e6, "maximum": 1e6},
        },
    },
    "FeedbackAccepted": {
        "type": "object",
        "required": ["request_id", "accepted"],
        "properties": {"request_id": {"type": "string"}, "accepted": {"const": True}},
    },
    "UsageTotals": {
        "type": "object",
        "required": ["requests", "input_tokens", "output_tokens", "cost_usd"],
        "properties": {
            "requests": {"type": "integer", "minimum": 0},
            "input_tokens": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
            "cost_usd": {"type": "string", "description": "A decimal number of US dollars."},
        },
    },
    "UsageReport": {
        "type": "object",
        "required": ["tenant", "from", "to", "groupBy", "groups", "total"],
        "properties": {
            "tenant": {"type": "string"},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "groupBy": {"enum": ["model", "user", "department", "project"]},
            "groups": {"type": "array", "items": _ref("UsageTotals")},
            "total": _ref("UsageTotals"),
        },
    },
    "Endpoint": {
        "type": "object",
        "required": ["model", "url", "state", "usable", "in_flight"],
        "properties": {
            "model": {"type": "string"},
            "url": {"type": "string"},
            "state": {"enum": ["closed", "open", "half_open"]},
            "usable": {"type": "boolean"},
            "reachable": {"type": "boolean"},
            "in_flight": {"type": "integer"},
            "reported_load": {"type": ["number", "null"]},
            "slots": {"type": ["integer", "null"]},
            "consecutive_failures": {"type": "integer"},
            "failures": {"type": "integer"},
            "successes": {"type": "integer"},
            "ewma_latency_ms": {"type": "number"},
        },
    },
    "Endpoints": {
        "type": "object",
        "required": ["endpoints"],
        "properties": {"endpoints": {"type": "array", "items": _ref("Endpoint")}},
    },
    "Experiment": {
        "description": "The live figures of one experiment, as in its status.",
        "type": "object",
        "required": ["name", "model", "epoch", "variants"],
        "properties": {
            "name": {"type": "string"},
            "model": {"type": "string"},
            "routedTo": {"type": ["string", "null"]},
            "epoch": {"type": "integer"},
            "variants": {"type": "array"},
        },
    },
    "ExperimentList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Experiment")},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "config": {"type": "string"}},
    },
}

_DESCRIPTIONS = {
    200: "OK",
    400: "Malformed request (invalid_json, duplicate_key, missing_model, missing_field, "
    "invalid_request, invalid_body, invalid_http, tenant_ambiguous)",
    401: "Missing, malformed or unknown API key; a bad OIDC token",
    403: "The role lacks the permission",
    404: "Unknown, or not the tenant's",
    408: "The request body did not arrive within --body-timeout",
    413: "The body is over --max-body-bytes",
    429: "A limit or the budget (Retry-After)",
    431: "A header line over 8190 bytes, or more than 128 headers",
    502: "Every attempt failed upstream",
    503: "No healthy endpoint, not ready, state unavailable or overloaded",
    504: "The model server was too slow",
}

# Every authenticated route can answer these: the checks before any handler runs.
_API_ERRORS = (400, 401, 403, 408, 413, 431, 503)
_MODEL_ERRORS = (*_API_ERRORS, 404, 429, 502, 504)


def _errors(statuses: tuple[int, ...], schema: Schema | None = None) -> dict[str, Any]:
    error = {"content": {JSON: {"schema": schema or _ref("Error")}}}
    return {str(s): {"description": _DESCRIPTIONS[s], **error} for s in sorted(set(statuses))}


def _ok(schema: str, stream: bool = False, description: str = "OK") -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": _ref(schema)}}
    if stream:
        content["text/event-stream"] = {
            "schema": {
                "description": "One event: its data is a chunk as JSON, [DONE], or an error.",
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
            },
            "description": "With stream: true, server-sent events relayed as they arrive; "
            "a failure after the first event ends the stream with data: {error: ...}.",
        }
    return {"200": {"description": description, "content": content}}


_MODEL_HEADERS = [
    {
        "name": "x-llmrouter-tenant",
        "in": "header",
        "required": False,
        "description": "With an OIDC token valid for several tenants: which one.",
        "schema": {"type": "string"},
    },
    {
        "name": "x-llmrouter-task-type",
        "in": "header",
        "required": False,
        "description": "Picks the tenant's routing rule for this task type.",
        "schema": {"type": "string"},
    },
    {
        "name": "x-llmrouter-cache",
        "in": "header",
        "required": False,
        "schema": {"enum": ["use", "bypass"]},
    },
]


def _model_operation(summary: str, request: str, answer: str, streams: bool) -> dict[str, Any]:
    properties = SCHEMAS[request]["properties"]
    example = {
        name: value["examples"][0] for name, value in properties.items() if "examples" in value
    }
    return {
        "summary": summary,
        "parameters": _MODEL_HEADERS,
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _ref(request), "example": example}},
        },
        "responses": {**_ok(answer, stream=streams), **_errors(_MODEL_ERRORS)},
    }


_PUBLIC: list[dict[str, list[str]]] = []

PATHS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "post": _model_operation(
            "Chat completion, or a stream of it", "ChatCompletionRequest", "ChatCompletion", True
        )
    },
    "/v1/completions": {
        "post": _model_operation(
            "Text completion, or a stream of it", "CompletionRequest", "Completion", True
        )
    },
    "/v1/embeddings": {
        "post": _model_operation("Embeddings", "EmbeddingRequest", "Embeddings", False)
    },
    "/v1/responses": {
        "post": _model_operation(
            "A response (Responses API), or its stream of events",
            "ResponseRequest",
            "Response",
            True,
        )
    },
    "/v1/responses/{response_id}": {
        "get": {
            "summary": "A response stored by this tenant (store: true)",
            "parameters": [
                {
                    "name": "response_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {**_ok("Response"), **_errors((*_API_ERRORS, 404))},
        },
        "delete": {
            "summary": "Forget a response stored by this tenant",
            "parameters": [
                {
                    "name": "response_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {**_ok("ResponseDeleted"), **_errors((*_API_ERRORS, 404))},
        },
    },
    "/v1/messages": {
        "post": {
            **_model_operation(
                "A message (Anthropic's Messages API), or its stream of events",
                "MessageRequest",
                "Message",
                True,
            ),
            "responses": {
                **_ok("Message", stream=True),
                **_errors(_MODEL_ERRORS, {"anyOf": [_ref("Error"), _ref("AnthropicError")]}),
            },
        }
    },
    "/v1/models": {
        "get": {
            "summary": "The models and aliases the caller's tenant may use",
            "responses": {**_ok("ModelList"), **_errors(_API_ERRORS)},
        }
    },
    "/v1/models/{model}": {
        "get": {
            "summary": "One model, if the caller's tenant may use it (else 404, alike)",
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "chat",
                }
            ],
            "responses": {**_ok("Model"), **_errors((*_API_ERRORS, 404))},
        }
    },
    "/v1/feedback": {
        "post": {
            "summary": "A score for one answer of an experiment, once, within 7 days",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": _ref("FeedbackRequest"),
                        "example": {"request_id": "5f0c3e1a9b7d4c2e8a6f1b3d5c7e9a0b", "score": 1},
                    }
                },
            },
            "responses": {**_ok("FeedbackAccepted"), **_errors((*_API_ERRORS, 404))},
        }
    },
    "/admin/usage": {
        "get": {
            "summary": "Requests, tokens and cost of the caller's tenant (usage:read)",
            "parameters": [
                {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                {
                    "name": "groupBy",
                    "in": "query",
                    "schema": {"enum": ["model", "user", "department", "project"]},
                },
                {
                    "name": "tenant",
                    "in": "query",
                    "description": "Only the caller's own tenant may be named.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {**_ok("UsageReport"), **_errors(_API_ERRORS)},
        }
    },
    "/admin/audit": {
        "get": {
            "summary": "The caller's tenant's audit records, oldest first (audit:read)",
            "parameters": [
                *(
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("type", "model", "request_id", "user", "after", "tenant")
                ),
                *(
                    {
                        "name": name,
                        "in": "query",
                        "schema": {"type": "string", "format": "date-time"},
                    }
                    for name in ("from", "to")
                ),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {**_ok("AuditPage"), **_errors(_API_ERRORS)},
        }
    },
    "/admin/slo": {
        "get": {
            "summary": "Compliance of the caller's tenant's SLAPolicies, from this process's "
            "own counts (usage:read)",
            "responses": {**_ok("SLOReport"), **_errors(_API_ERRORS)},
        }
    },
    "/admin/endpoints": {
        "get": {
            "summary": "The servers of the caller's tenant's models (admin:read)",
            "responses": {**_ok("Endpoints"), **_errors(_API_ERRORS)},
        }
    },
    "/admin/experiments": {
        "get": {
            "summary": "Live figures of the experiments splitting the caller's tenant's "
            "traffic alone (experiments:read)",
            "responses": {**_ok("ExperimentList"), **_errors(_API_ERRORS)},
        }
    },
    "/admin/experiments/{name}": {
        "get": {
            "summary": "One of those experiments",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {**_ok("Experiment"), **_errors((*_API_ERRORS, 404))},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "security": _PUBLIC,
            "responses": _ok("Health"),
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: a valid configuration is loaded and the process is not draining",
            "security": _PUBLIC,
            "responses": {
                **_ok("Health"),
                "503": {
                    "description": "No configuration yet, or draining",
                    "content": {JSON: {"schema": _ref("Health")}},
                },
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": _PUBLIC,
            "responses": {
                "200": {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}
            },
        }
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llmrouter gateway",
            "version": __version__,
            "description": "An OpenAI-compatible, multi-tenant LLM gateway. Every error is "
            "OpenAI-shaped (components/schemas/Error).",
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, or an OIDC token of the tenant's issuer.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


@functools.cache
def _body() -> bytes:
    return orjson.dumps(document())


@openapi_routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type=JSON)
