"""HTTP routes of the gateway."""

from __future__ import annotations

from aiohttp import web

from llmrouter.gateway.config import GatewayConfig, TenantPolicy
from llmrouter.gateway.errors import ModelNotFound
from llmrouter.gateway.keys import CONFIG, IDENTITY, LOAD, STORE
from llmrouter.gateway.messages_api import create_message
from llmrouter.gateway.openai_request import Operation
from llmrouter.gateway.proxy import handle_model_request
from llmrouter.gateway.responses import create_response, delete_response, get_response
from llmrouter.gateway.roles import MODELS_READ

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_model_request(request, Operation.CHAT)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await handle_model_request(request, Operation.COMPLETIONS)


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.StreamResponse:
    return await handle_model_request(request, Operation.EMBEDDINGS)


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    return await create_response(request)


@routes.get("/v1/responses/{response_id}")
async def response_by_id(request: web.Request) -> web.Response:
    return await get_response(request)


@routes.delete("/v1/responses/{response_id}")
async def delete_response_by_id(request: web.Request) -> web.Response:
    return await delete_response(request)


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    return await create_message(request)


def _visible_models(config: GatewayConfig, tenant: TenantPolicy) -> list[str]:
    """Every name the tenant can send: allowed models and their aliases."""
    names = {name for name in tenant.models}
    names.update(alias for alias, target in config.aliases.items() if target in tenant.models)
    return sorted(names)


def _model_object(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmrouter"}


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    identity.require(MODELS_READ)
    names = _visible_models(request[CONFIG], identity.tenant)
    return web.json_response({"object": "list", "data": [_model_object(n) for n in names]})


@routes.get("/v1/models/{model:.+}")
async def get_model(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    identity.require(MODELS_READ)
    name = request.match_info["model"]
    if name not in _visible_models(request[CONFIG], identity.tenant):
        raise ModelNotFound(f"model {name!r} does not exist or you do not have access to it")
    return web.json_response(_model_object(name))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if request.app[LOAD].draining:
        return web.json_response({"status": "draining"}, status=503)
    if not store.ready:
        return web.json_response({"status": "no configuration"}, status=503)
    return web.json_response({"status": "ok", "config": store.fingerprint})
