"""GET /admin/experiments[/name]: the live figures of the caller's tenant's experiments."""

from __future__ import annotations

from aiohttp import web

from llmrouter.gateway.config import ExperimentPolicy
from llmrouter.gateway.errors import GatewayError
from llmrouter.gateway.experiments.report import report
from llmrouter.gateway.keys import CONFIG, IDENTITY, SETTINGS, STATE
from llmrouter.gateway.roles import EXPERIMENTS_READ

experiment_routes = web.RouteTableDef()


class ExperimentNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "experiment_not_found"


def _visible(request: web.Request) -> list[ExperimentPolicy]:
    """Only experiments that split the caller's tenant's traffic and nobody else's: the
    figures of one that spans several tenants are theirs together, shown only in the
    Experiment's status to whoever may read it in the cluster."""
    identity = request[IDENTITY]
    identity.require(EXPERIMENTS_READ)
    tenant = identity.tenant.id
    return [p for p in request[CONFIG].experiments.values() if p.tenants == {tenant}]


async def _view(request: web.Request, policy: ExperimentPolicy) -> dict[str, object]:
    now = request.app[SETTINGS].clock()
    elapsed = now - policy.started_at if policy.started_at is not None else 0.0
    found = await report(request.app[STATE], policy, elapsed)
    name = policy.id.split("/", 1)[1]
    return {"name": name, "model": policy.model, "routedTo": policy.routed_to, **found.to_status()}


@experiment_routes.get("/admin/experiments")
async def list_experiments(request: web.Request) -> web.Response:
    views = [await _view(request, p) for p in _visible(request)]
    return web.json_response({"object": "list", "data": views})


@experiment_routes.get("/admin/experiments/{name}")
async def get_experiment(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for policy in _visible(request):
        if policy.id.split("/", 1)[1] == name:
            return web.json_response(await _view(request, policy))
    raise ExperimentNotFound(f"no experiment {name!r} splits your traffic", param="name")
