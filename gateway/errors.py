"""The error tree and the one map from an error to HTTP status + OpenAI error body.

::

    GatewayError                      -> status, type, code, param; OpenAI body
      InvalidRequest (400)            bad JSON, fields, headers
        NoCapableVariant (400)        code no_capable_variant, lists the unmet needs
        ContextLengthExceeded (400)   code context_length_exceeded
        ContentFiltered (400)         code content_policy_violation
      AuthenticationFailed (401)
      PermissionDenied (403)
      NotFound (404)
      BodyTooLarge (413)
      RateLimited (429)               Retry-After
      UpstreamsFailed (502 / 503)     every attempt listed
      DeadlineExceeded (504)
      InternalError (500)             an uncaught exception, logged once with its traceback
    ConfigError                       start-up only; names file and key
"""

from __future__ import annotations

from typing import Any

import orjson


class ConfigError(Exception):
    """The config directory is invalid. The message names the file and the key."""


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.extra:
            err.update(self.extra)
        return {"error": err}

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class NoCapableVariant(InvalidRequest):
    code = "no_capable_variant"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ContentFiltered(InvalidRequest):
    code = "content_policy_violation"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamsFailed(GatewayError):
    """Every candidate failed. ``status`` is 503 when all failures were capacity, else 502."""

    type = "upstream_error"
    code = "all_candidates_failed"

    def __init__(self, message: str, *, status: int = 502, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status


class InternalError(GatewayError):
    """A bug: an exception nothing else caught. The answer names the request id to report."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"The gateway failed on this request (an internal error, not the upstream's). "
            f"It was logged with request id {request_id}; report that id to the operator."
        )


class DeadlineExceeded(GatewayError):
    status = 504
    type = "timeout_error"
    code = "deadline_exceeded"
