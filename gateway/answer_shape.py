"""How an answer leaves the pipeline when the client spoke another API than chat completions.

The pipeline works in chat completions from end to end (cache, guardrails and accounting
read that shape); an endpoint such as /v1/responses or /v1/messages puts a shape on the
request, and the pipeline hands it each whole answer and every stream it opens.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class AnswerShape(Protocol):
    async def whole(self, answer: web.Response) -> web.Response:
        """The client's answer for a whole chat completion (unsent, status 200)."""

    def stream(self, headers: dict[str, str]) -> web.StreamResponse:
        """The response chat completion chunks are written to, one whole event a write."""


ANSWER_SHAPE = web.RequestKey("answer_shape", AnswerShape)


async def shaped(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    shape: AnswerShape | None = request.get(ANSWER_SHAPE)
    if shape is None or answer.prepared or not isinstance(answer, web.Response):
        return answer
    return await shape.whole(answer)


def stream_response(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    shape: AnswerShape | None = request.get(ANSWER_SHAPE)
    return web.StreamResponse(headers=headers) if shape is None else shape.stream(headers)
