"""POST /v1/feedback: a user's score for one answer, the `feedback` metric of experiments."""

from __future__ import annotations

import math

from aiohttp import web

from llmrouter.gateway.errors import GatewayError, InvalidRequest
from llmrouter.gateway.experiments.measurement import add_feedback, take_ticket
from llmrouter.gateway.json_body import parse_object
from llmrouter.gateway.keys import IDENTITY, STATE
from llmrouter.gateway.roles import MODELS_INVOKE

feedback_routes = web.RouteTableDef()

MAX_SCORE = 1e6


class FeedbackNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "feedback_not_found"


@feedback_routes.post("/v1/feedback")
async def feedback(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    identity.require(MODELS_INVOKE)
    request_id, score = _parse(await request.read())
    state = request.app[STATE]
    ticket = await take_ticket(state, identity.tenant.id, request_id)
    if ticket is None:
        raise FeedbackNotFound(
            f"request {request_id!r} is not one of your recent requests in an experiment, "
            "or it has had its feedback",
            param="request_id",
        )
    await add_feedback(state, ticket, score)
    return web.json_response({"request_id": request_id, "accepted": True})


def _parse(raw: bytes) -> tuple[str, float]:
    body = parse_object(raw)
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
        raise InvalidRequest(
            "'request_id' must be the x-llmrouter-request-id of an answer", param="request_id"
        )
    score = body.get("score")
    if (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not math.isfinite(score)
        or abs(score) > MAX_SCORE
    ):
        raise InvalidRequest(
            f"'score' must be a number between {-MAX_SCORE:g} and {MAX_SCORE:g}", param="score"
        )
    return request_id, float(score)
