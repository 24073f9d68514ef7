"""The OpenAPI 3.1 document of the registered operations, and a script-free HTML docs page.

Built from the same `Route` objects the server runs, with the pydantic models' JSON schemas
(draft 2020-12, which OpenAPI 3.1 uses) under `components/schemas`; every error answer refers to
the one `Problem` schema. Query and path models are turned into parameters.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ripplecast import __version__
from ripplecast.http.api.problems import PROBLEM_CONTENT_TYPE, Problem, phrase
from ripplecast.http.live import SESSION_COOKIE

if TYPE_CHECKING:
    from ripplecast.http.api.framework import Route

__all__ = ["API_PREFIX", "SECURITY_SCHEMES", "docs_page", "openapi_document", "openapi_path"]

API_PREFIX = "/api/v1"


SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
}


def _error_statuses(route: Route) -> list[int]:
    statuses = set(route.errors)
    if route.body is not None:
        statuses |= {400, 413, 415, 422}
    if route.raw_body is not None:
        statuses |= {413, 415}
    if route.headers is not None:
        statuses.add(400)
    if route.query is not None:
        statuses.add(422)
    if route.auth is not None:
        statuses |= {401, 403}
    if route.path_param_names:
        statuses.add(404)
    statuses.add(500)
    return sorted(statuses)


def openapi_path(path: str) -> str:
    """The document's path for a route path: prefixed, `{name:regex}` reduced to `{name}`."""
    parts = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            part = "{" + part[1:-1].split(":", 1)[0] + "}"
        parts.append(part)
    return API_PREFIX + "/".join(parts)


def openapi_document(
    routes: Sequence[Route], *, title: str = "Ripplecast API", version: str = __version__
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing `routes` (JSON-ready)."""
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for route in routes:
        if route.response is not None:
            models.append((route.response, "serialization"))
        if route.body is not None:
            models.append((route.body, "validation"))
        if route.query is not None:
            models.append((route.query, "validation"))
        if route.params is not None:
            models.append((route.params, "validation"))
        if route.headers is not None:
            models.append((route.headers, "validation"))
    unique = list(dict.fromkeys(models))
    refs, defs = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(refs[(model, mode)])  # type: ignore[index]

    def resolved(model: type[BaseModel], mode: str) -> dict[str, Any]:
        name = ref(model, mode)["$ref"].rsplit("/", 1)[-1]
        found: dict[str, Any] = schemas[name]
        return found

    problem = {PROBLEM_CONTENT_TYPE: {"schema": ref(Problem, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    parameter_models = set()

    def properties(model: type[BaseModel] | None) -> tuple[dict[str, Any], set[str]]:
        if model is None:
            return {}, set()
        parameter_models.add(ref(model, "validation")["$ref"].rsplit("/", 1)[-1])
        schema = resolved(model, "validation")
        return schema.get("properties", {}), set(schema.get("required", ()))

    def parameter(name: str, where: str, required: bool, prop: dict[str, Any]) -> dict[str, Any]:
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": required,
            "schema": {k: v for k, v in prop.items() if k not in ("description", "title")},
        }
        if "description" in prop:
            param["description"] = prop["description"]
        return param

    for route in routes:
        path_props, _ = properties(route.params)
        parameters = [
            parameter(name, "path", True, path_props.get(name, {"type": "string"}))
            for name in route.path_param_names
        ]
        query_props, required = properties(route.query)
        for name, prop in query_props.items():
            parameters.append(parameter(name, "query", name in required, prop))
        header_props, required = properties(route.headers)
        for name, prop in header_props.items():
            parameters.append(parameter(name, "header", name in required, prop))
        ok: dict[str, Any] = {"description": phrase(route.status)}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": ref(route.response, "serialization")}}
        responses: dict[str, Any] = {str(route.status): ok}
        for status in _error_statuses(route):
            responses[str(status)] = {"description": phrase(status), "content": problem}
            if status == 401:
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
                }
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": list(route.tags),
            "responses": responses,
        }
        if route.description:
            operation["description"] = route.description
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        if route.raw_body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {route.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        if route.auth is not None:
            operation["security"] = [{"bearerAuth": []}, {"sessionCookie": []}]
            operation["x-required-scope"] = str(route.auth)
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation
    for name in parameter_models:
        # Query and path models become parameters; keep them only if something else refers to them.
        text = json.dumps({k: v for k, v in schemas.items() if k != name})
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def docs_page(document: Mapping[str, Any]) -> str:
    """A self-contained HTML page listing the operations of `document` (no scripts)."""
    esc = html.escape
    info = document["info"]
    rows = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            params = ", ".join(
                f"{esc(p['name'])} ({esc(p['in'])})" for p in op.get("parameters", ())
            )
            statuses = ", ".join(esc(code) for code in op["responses"])
            scope = op.get("x-required-scope")
            rows.append(
                "<section>"
                f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2>"
                f"<p><strong>{esc(op['summary'])}</strong></p>"
                + (f"<p>{esc(op['description'])}</p>" if op.get("description") else "")
                + (f"<p>Parameters: {params}</p>" if params else "")
                + (f"<p>Needs scope: <code>{esc(scope)}</code></p>" if scope else "")
                + f"<p>Responses: {statuses}</p>"
                "</section>"
            )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(info['title'])}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "section{border-top:1px solid #ccc}</style></head><body>"
        f"<h1>{esc(info['title'])} {esc(info['version'])}</h1>"
        f'<p>Machine-readable: <a href="{API_PREFIX}/openapi.json">openapi.json</a>. '
        "Errors are <code>application/problem+json</code> (RFC 9457).</p>"
        + "".join(rows)
        + "</body></html>"
    )
