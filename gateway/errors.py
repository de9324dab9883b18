"""Errors a client can see, each with its HTTP status and OpenAI-shaped body.

Every failure inside the gateway is translated to one of these at the edge (the error
middleware); nothing else, and never a stack trace, reaches a client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"
    retryable = False
    """Another endpoint or a fallback model might answer where this one did not."""
    endpoint_fault = False
    """The endpoint itself failed: counts towards opening its circuit breaker."""
    shape: Callable[[GatewayError], dict[str, Any]] | None = None
    """The body in another API's error shape (set by endpoints that serve one)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.param = param

    def body(self) -> dict[str, Any]:
        if self.shape is not None:
            return self.shape(self)
        return error_body(self.message, self.type, self.code, self.param)


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


ANTHROPIC_PATHS = ("/v1/messages",)
"""Where errors are in Anthropic's shape: its SDK reads them there."""

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(exc: GatewayError) -> dict[str, Any]:
    """An error as Anthropic's API writes it."""
    kind = _ANTHROPIC_TYPES.get(
        exc.status, "api_error" if exc.status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UpstreamFailed(GatewayError):
    """The model server could not give an answer: unreachable, broken, or refused us."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True
    endpoint_fault = True


class UpstreamBusy(GatewayError):
    """The model server said it is rate limited: try elsewhere, but it is not broken."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"
    retryable = True


class NoHealthyUpstream(GatewayError):
    status = 503
    type = "upstream_error"
    code = "no_healthy_upstream"


class UpstreamMisconfigured(GatewayError):
    """A model the gateway cannot call as configured: a fallback model might still answer."""

    status = 502
    type = "upstream_error"
    code = "upstream_misconfigured"
    retryable = True


class UpstreamTimeout(UpstreamFailed):
    status = 504
    code = "upstream_timeout"


class NotReady(GatewayError):
    status = 503
    type = "server_error"
    code = "not_ready"


class Overloaded(GatewayError):
    """This process has as many requests in flight as it may hold: refused at once, so that
    the client can go elsewhere instead of waiting in a queue."""

    status = 503
    type = "server_error"
    code = "overloaded"
