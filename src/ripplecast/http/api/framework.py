"""A small typed layer over aiohttp for the REST API: routes, validation, errors, auth.

An `ApiRouter` collects operations declared with `@router.get/post/patch/delete(...)`. Each
operation names its pydantic models (request body, query, response) and the scope it needs;
`install_api` mounts every router under `/api/v1` together with `GET /api/v1/openapi.json` (an
OpenAPI 3.1 document built from the same declarations) and `GET /api/v1/docs` (a plain HTML
listing rendered here: no third-party script).

Invariants:
- Every error under `/api/` is one RFC 9457 `application/problem+json` shape (`Problem`):
  router 404/405, 413 from aiohttp's body limit, 415, 400/422 validation, 401/403 and any
  unexpected exception (a 500 with a generic detail; the traceback goes to the log only).
- A body is parsed once with `Model.model_validate_json(bytes, strict=True)`; problems list the
  location, message and type of each error and never echo the input (it may hold a secret).
- The OpenAPI document and the runtime agree because both read the same `Route` objects.

The error shape lives in `problems`, the document and docs page in `openapi`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from ripplecast import __version__
from ripplecast.accounts.csrf import HEADER as CSRF_HEADER
from ripplecast.accounts.csrf import check_csrf
from ripplecast.accounts.policy import AccessRequest, Action, Principal, Scope, Via
from ripplecast.http.api.openapi import API_PREFIX, docs_page, openapi_document, openapi_path
from ripplecast.http.api.problems import (
    ApiError,
    FieldIssue,
    issues,
    problem_middleware,
)
from ripplecast.http.live import SESSION_COOKIE, Authorize, request_credentials

__all__ = [
    "ApiContext",
    "ApiRouter",
    "Authorize",
    "Page",
    "PageQuery",
    "Route",
    "install_api",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Pagination


class PageQuery(BaseModel):
    """Query parameters of a paginated list."""

    limit: int = Field(default=20, ge=1, le=100, description="Items per page.")
    offset: int = Field(default=0, ge=0, le=1_000_000_000, description="Items to skip.")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int = Field(ge=0, description="Items in the whole list.")
    limit: int = Field(ge=1, description="The page size asked for.")
    offset: int = Field(ge=0, description="Items skipped before this page.")

    @classmethod
    def of(cls, items: Sequence[T], query: PageQuery) -> Page[T]:
        """The page of `items` that `query` asks for."""
        chosen = list(items[query.offset : query.offset + query.limit])
        return cls(items=chosen, total=len(items), limit=query.limit, offset=query.offset)


# --------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What a handler gets: the request and everything already checked about it."""

    request: web.Request
    principal: Principal | None
    """Who the credentials say the caller is (set for operations that need a scope)."""
    body: BaseModel | None
    """The validated request body, or None for operations without one."""
    query: BaseModel | None
    """The validated query, or None for operations that declare none."""
    path_params: Mapping[str, str]
    """The path parameters, as matched (URL-decoded)."""
    params: BaseModel | None
    """The path parameters validated by the operation's `params` model, or None."""
    headers: BaseModel | None
    """The request headers validated by the operation's `headers` model, or None."""
    authorize: Authorize
    """The access policy, for handlers that decide per item (e.g. which streams to list)."""
    finish: list[Callable[[web.StreamResponse], None]] = field(default_factory=list)
    """Changes to make to the response before it is sent (cookies, headers)."""

    async def caller(self) -> Principal | None:
        """Who the caller is on an operation open to anyone: the principal its session or
        token (with the read scope) names, or None when it sent none or an invalid one."""
        if self.principal is not None:
            return self.principal
        request = self.request
        credentials = request_credentials(request)
        if not (credentials.session_id or credentials.api_token):
            return None
        decision = await self.authorize(
            AccessRequest(
                Action.API,
                request.path,
                Via.API,
                credentials,
                request.remote or "",
                request.path,
                scope=Scope.READ,
            )
        )
        return decision.principal if decision.allowed else None

    def body_as(self, model: type[M]) -> M:
        """The body as `model` (a handler knows which model it declared)."""
        if not isinstance(self.body, model):
            raise TypeError(f"the operation's body is not a {model.__name__}")
        return self.body

    def query_as(self, model: type[M]) -> M:
        """The query as `model`."""
        if not isinstance(self.query, model):
            raise TypeError(f"the operation's query is not a {model.__name__}")
        return self.query

    def headers_as(self, model: type[M]) -> M:
        """The declared request headers as `model`."""
        if not isinstance(self.headers, model):
            raise TypeError(f"the operation's headers are not a {model.__name__}")
        return self.headers

    def params_as(self, model: type[M]) -> M:
        """The path parameters as `model`."""
        if not isinstance(self.params, model):
            raise TypeError(f"the operation's path parameters are not a {model.__name__}")
        return self.params


Handler = Callable[[ApiContext], Awaitable[BaseModel | None]]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: method, path (relative to /api/v1) and its declared models."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    status: int
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    auth: Scope | None
    tags: tuple[str, ...]
    params: type[BaseModel] | None = None
    """Validates the path parameters; a value it refuses names no resource (404)."""
    description: str = ""
    errors: tuple[int, ...] = ()
    """Extra error statuses the handler itself may answer with (e.g. 404)."""
    raw_body: str | None = None
    """A body of this media type that the handler streams itself from `request.content`
    (uploads: never read whole into memory, so not bound by the JSON body limit)."""
    headers: type[BaseModel] | None = None
    """Validates request headers (field aliases are the header names); a refusal is a 400."""

    @property
    def path_param_names(self) -> list[str]:
        names = []
        for part in self.path.split("/"):
            if part.startswith("{") and part.endswith("}"):
                names.append(part[1:-1].split(":", 1)[0])
        return names

    @property
    def operation_id(self) -> str:
        return getattr(self.handler, "__name__", "operation")


@dataclass
class ApiRouter:
    """A set of operations sharing default tags; mounted by `install_api`."""

    tags: tuple[str, ...] = ()
    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        response: type[BaseModel] | None,
        status: int = 200,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        params: type[BaseModel] | None = None,
        auth: Scope | None = None,
        tags: Sequence[str] | None = None,
        errors: Sequence[int] = (),
        raw_body: str | None = None,
        headers: type[BaseModel] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler for `method path` (path relative to /api/v1)."""
        if not path.startswith("/"):
            raise ValueError(f"API path {path!r} must start with '/'")
        if status == 204 and response is not None:
            raise ValueError("a 204 operation has no response model")
        if raw_body is not None and body is not None:
            raise ValueError("an operation has a JSON body or a raw body, not both")

        def register(handler: Handler) -> Handler:
            doc = inspect.cleandoc(handler.__doc__ or "")
            self.routes.append(
                Route(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    summary=summary,
                    response=response,
                    status=status,
                    body=body,
                    query=query,
                    params=params,
                    auth=auth,
                    tags=tuple(tags) if tags is not None else self.tags,
                    description=doc,
                    errors=tuple(errors),
                    raw_body=raw_body,
                    headers=headers,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        """`route("GET", ...)`."""
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        """`route("POST", ...)`."""
        return self.route("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        """`route("PATCH", ...)`."""
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        """`route("DELETE", ...)`."""
        return self.route("DELETE", path, **kw)

    def head(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        """`route("HEAD", ...)`."""
        return self.route("HEAD", path, **kw)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _read_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if not request.can_read_body:
        raise ApiError(
            422,
            "a JSON request body is required",
            errors=[FieldIssue(loc=["body"], msg="Field required", type="missing")],
        )
    if not _is_json(request.content_type):
        raise ApiError(415, "the request body must be application/json")
    raw = await request.read()  # aiohttp raises 413 past client_max_size
    try:
        # Strict: the JSON types must be the schema's (no `false` for a number, no "1" for an
        # integer), so what is accepted is exactly what the OpenAPI document promises.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        found = issues(exc, "body")
        if any(issue.type == "json_invalid" for issue in found):
            raise ApiError(400, "the request body is not valid JSON", errors=found) from None
        raise ApiError(422, "the request body failed validation", errors=found) from None


def _read_params(request: web.Request, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError:
        raise ApiError(404, "no such API resource") from None


def _read_headers(request: web.Request, model: type[BaseModel]) -> BaseModel:
    values = {}
    for name, info in model.model_fields.items():
        header = info.alias or name
        if header in request.headers:
            values[header] = request.headers[header]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(
            400, "a request header is missing or invalid", errors=issues(exc, "header")
        ) from None


def _check_raw_body(request: web.Request, media_type: str) -> None:
    if request.content_type != media_type:
        raise ApiError(415, f"the request body must be {media_type}")


def _read_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    values = {key: request.query.getone(key) for key in request.query}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(422, "the query failed validation", errors=issues(exc, "query")) from None


async def _check_auth(request: web.Request, scope: Scope, authorize: Authorize) -> Principal | None:
    decision = await authorize(
        AccessRequest(
            Action.API,
            request.path,
            Via.API,
            request_credentials(request),
            request.remote or "",
            request.path,
            scope=scope,
        )
    )
    if decision.allowed:
        return decision.principal
    if decision.status == 401:
        raise ApiError(
            401,
            "authentication required (a bearer token or a session)",
            headers={"WWW-Authenticate": 'Bearer realm="ripplecast"'},
        )
    raise ApiError(403, f"this operation needs the {scope} scope")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _check_csrf(request: web.Request, secret: bytes) -> None:
    """A change authenticated by the session cookie must carry the session's CSRF token."""
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return  # no browser sends a bearer token by itself
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if session_id and not check_csrf(secret, session_id, request.headers.get(CSRF_HEADER, "")):
        raise ApiError(403, f"missing or invalid {CSRF_HEADER} header")


def _aiohttp_handler(
    route: Route, authorize: Authorize, csrf_secret: bytes | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = None
        if route.auth is not None:
            principal = await _check_auth(request, route.auth, authorize)
            if csrf_secret is not None and request.method not in SAFE_METHODS:
                _check_csrf(request, csrf_secret)
        params = _read_params(request, route.params) if route.params is not None else None
        query = _read_query(request, route.query) if route.query is not None else None
        headers = _read_headers(request, route.headers) if route.headers is not None else None
        if route.raw_body is not None:
            _check_raw_body(request, route.raw_body)
        body = await _read_body(request, route.body) if route.body is not None else None
        ctx = ApiContext(
            request=request,
            principal=principal,
            body=body,
            query=query,
            path_params=dict(request.match_info),
            params=params,
            headers=headers,
            authorize=authorize,
        )
        result = await route.handler(ctx)
        response: web.Response
        if route.response is None:
            response = web.Response(status=route.status)
        elif not isinstance(result, route.response):
            raise TypeError(f"{route.operation_id} returned {type(result).__name__}")
        else:
            response = web.Response(
                status=route.status,
                body=result.model_dump_json().encode(),
                content_type="application/json",
            )
        for change in ctx.finish:
            change(response)
        return response

    return handle


def install_api(
    app: web.Application,
    routers: Sequence[ApiRouter],
    *,
    authorize: Authorize,
    csrf_secret: bytes | None = None,
    title: str = "Ripplecast API",
    version: str = __version__,
) -> dict[str, Any]:
    """Mount `routers` under /api/v1 with the problem middleware, openapi.json and docs.

    With `csrf_secret`, a change authenticated by the session cookie needs the session's
    CSRF token in the X-CSRF-Token header. Call before the app starts (it adds a middleware).
    Returns the OpenAPI document.
    """
    routes = [route for router in routers for route in router.routes]
    seen: set[tuple[str, str]] = set()
    for route in routes:
        key = (route.method, openapi_path(route.path))
        if key in seen:
            raise ValueError(f"duplicate API operation {key[0]} {key[1]}")
        seen.add(key)
        app.router.add_route(
            route.method, API_PREFIX + route.path, _aiohttp_handler(route, authorize, csrf_secret)
        )
    document = openapi_document(routes, title=title, version=version)
    spec = json.dumps(document, indent=1).encode()
    page = docs_page(document).encode()

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    async def docs(_request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )

    app.router.add_get(API_PREFIX + "/openapi.json", openapi_json, allow_head=False)
    app.router.add_get(API_PREFIX + "/docs", docs, allow_head=False)
    app.middlewares.append(problem_middleware)
    return document
