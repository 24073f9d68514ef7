"""The one error shape of the API: RFC 9457 problem details, and the middleware that makes them.

Invariants: every error answer under `/api/` is `application/problem+json` with the `Problem`
fields; validation errors list location, message and type but never the input (which may be a
secret); an unexpected exception becomes a 500 with a generic detail, its traceback logged only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "ApiError",
    "FieldIssue",
    "Problem",
    "issues",
    "phrase",
    "problem_middleware",
    "problem_response",
]

log = logging.getLogger("ripplecast.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
MAX_ISSUES = 50
"""At most this many validation errors are listed in one problem."""


class FieldIssue(BaseModel):
    """One validation error: where, what, and its stable type (no input value)."""

    loc: list[str | int] = Field(description="Path to the offending value, e.g. ['body', 'x'].")
    msg: str = Field(description="What is wrong, in words.")
    type: str = Field(description="A stable error type from pydantic, e.g. 'missing'.")


class Problem(BaseModel):
    """An RFC 9457 problem detail: the one error shape of the API."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(default="about:blank", description="A URI naming the problem type.")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(ge=100, le=599, description="The HTTP status code.")
    detail: str = Field(description="What went wrong, for a human.")
    instance: str = Field(description="The path of the request that failed.")
    errors: list[FieldIssue] | None = Field(
        default=None, description="Validation errors (400/422 only)."
    )


class ApiError(Exception):
    """Raise in a handler to answer with a problem (status, detail, optional headers)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: list[FieldIssue] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors


def phrase(status: int) -> str:
    """The HTTP reason phrase of `status` (the `title` of an about:blank problem)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: web.Request,
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[FieldIssue] | None = None,
) -> web.Response:
    """The problem+json response for `status`."""
    problem = Problem(
        title=phrase(status), status=status, detail=detail, instance=request.path, errors=errors
    )
    return web.Response(
        status=status,
        body=problem.model_dump_json(exclude_none=True).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def issues(exc: ValidationError, where: str) -> list[FieldIssue]:
    """The errors of `exc`, located under `where` (body, query)."""
    # `include_input=False`, and never `ctx`: an input value could be a password or a token.
    return [
        FieldIssue(loc=[where, *error["loc"]], msg=error["msg"], type=error["type"])
        for error in exc.errors(include_input=False, include_url=False)[:MAX_ISSUES]
    ]


_DETAILS = {
    404: "no such API resource",
    405: "method not allowed on this resource",
    413: "request body too large",
}

# Headers of an aiohttp HTTPException worth keeping on the problem (e.g. Allow on a 405).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every error under `/api/` into a problem+json response."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return problem_response(
            request, exc.status, exc.detail, headers=exc.headers, errors=exc.errors
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        detail = _DETAILS.get(exc.status, phrase(exc.status).lower())
        return problem_response(request, exc.status, detail, headers=kept)
    except Exception:
        log.exception("api %s %s failed", request.method, request.path[:200])
        return problem_response(request, 500, "internal error; the server log has the details")
