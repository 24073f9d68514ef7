"""Schemathesis against the API's own OpenAPI document, over real HTTP.

The node's application with the API installed is served on a loopback port while ffmpeg
publishes a stream (so the listings carry real data). Schemathesis loads
`/api/v1/openapi.json` by URL and, for every operation, sends bounded sets of valid and invalid
requests: no answer may be a 5xx, and every answer must match the document (status code,
content type, headers, body schema). A test-only operation with a JSON body is included so the
body validation of the framework is fuzzed too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel, Field
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ripplecast.app import Node
from ripplecast.http.api import ApiContext, ApiRouter, install_api, streams_router
from ripplecast.http.api.auth import auth_router
from ripplecast.http.api.channels import channels_router
from ripplecast.http.api.users import users_router
from ripplecast.http.api.videos import videos_router
from ripplecast.http.api.webhooks import webhooks_router
from ripplecast.http.live import LiveRoutes
from ripplecast.webhooks.registry import WebhookRegistry
from support import NodeFactory, start_publisher

MAX_EXAMPLES = 30

# tus appends carry raw bytes under their own media type: serialize them as octet streams.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Settings(BaseModel):
    title: str = Field(min_length=1, max_length=40)
    tags: list[str] = Field(default_factory=list, max_length=5)
    volume: float = Field(ge=0, le=1)
    enabled: bool = True


def fuzz_router() -> ApiRouter:
    router = ApiRouter(tags=("test",))

    @router.patch("/settings", summary="Echo a settings body", response=Settings, body=Settings)
    async def update_settings(ctx: ApiContext) -> Settings:
        return ctx.body_as(Settings)

    return router


@contextlib.asynccontextmanager
async def serve_api(node: Node) -> AsyncIterator[str]:
    """The node's app with the API (and the fuzz router) on 127.0.0.1; yields the base URL."""
    # The live routes plus the API, on an app of our own: independent of whether the node's
    # `create_app` already mounts the API.
    app = web.Application(client_max_size=node.settings.api_max_body_bytes)
    LiveRoutes(node.settings, node.hub, node.access.authorize).register(app)
    auth = auth_router(node.accounts, node.logins, secret=node.secret, registration_open=True)
    routers = [
        streams_router(node.hub),
        auth,
        channels_router(node.accounts),
        users_router(node.accounts),
        webhooks_router(WebhookRegistry(node.db, allow_private=False)),
        videos_router(node.videos, node.uploads, signer=node.signed_query),
        fuzz_router(),
    ]
    install_api(app, routers, authorize=node.access.authorize, csrf_secret=node.secret)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def fuzz_operation(
    operation: schemathesis.APIOperation, mode: GenerationMode, base: str, http: requests.Session
) -> None:
    """Send up to MAX_EXAMPLES generated requests; raise on the first failed check."""
    checks = CHECKS + ([negative_data_rejection] if mode.is_negative else [])

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base, session=http, checks=checks)

    fuzz()


def run_schemathesis(base: str) -> list[str]:
    """Fuzz every operation of the served document; return what ran, as `METHOD path mode`."""
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    exercised: list[str] = []
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.method.upper()} {operation.path} {mode.value}"
                try:
                    fuzz_operation(operation, mode, base, http)
                except Unsatisfiable:
                    # Nothing in the operation can be made invalid: schemathesis's own runner
                    # skips such a negative phase too. The test asserts which ones these are.
                    assert mode.is_negative, label
                    label += " (nothing to negate)"
                exercised.append(label)
            if operation.path == "/api/v1/streams/{name}" and operation.method == "get":
                # Random names never hit the live one: check its real description explicitly.
                case = operation.Case(path_parameters={"name": "cam"})
                response = case.call_and_validate(base_url=base, session=http, checks=CHECKS)
                assert response.status_code == 200
                exercised.append("GET /api/v1/streams/cam")
    return exercised


@pytest.mark.ffmpeg
@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    make_node: NodeFactory,
) -> None:
    async with make_node() as running:
        async with serve_api(running.node) as base:
            async with await start_publisher(running, "cam", seconds=90):
                exercised = await asyncio.to_thread(run_schemathesis, base)
    operations = (
        "GET /api/v1/streams",
        "GET /api/v1/streams/{name}",
        "POST /api/v1/streams/{name}/kick",
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/logout",
        "POST /api/v1/auth/register",
        "GET /api/v1/auth/me",
        "POST /api/v1/auth/password",
        "GET /api/v1/tokens",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{id}",
        "GET /api/v1/channels",
        "POST /api/v1/channels",
        "GET /api/v1/channels/{slug}",
        "PATCH /api/v1/channels/{slug}",
        "DELETE /api/v1/channels/{slug}",
        "GET /api/v1/channels/{slug}/keys",
        "POST /api/v1/channels/{slug}/keys",
        "DELETE /api/v1/channels/{slug}/keys/{id}",
        "GET /api/v1/users",
        "PATCH /api/v1/users/{id}",
        "GET /api/v1/webhooks",
        "POST /api/v1/webhooks",
        "PATCH /api/v1/webhooks/{id}",
        "DELETE /api/v1/webhooks/{id}",
        "GET /api/v1/videos",
        "POST /api/v1/videos",
        "GET /api/v1/videos/{id}",
        "PATCH /api/v1/videos/{id}",
        "DELETE /api/v1/videos/{id}",
        "POST /api/v1/videos/{id}/retry",
        "POST /api/v1/uploads",
        "HEAD /api/v1/uploads/{id}",
        "PATCH /api/v1/uploads/{id}",
        "DELETE /api/v1/uploads/{id}",
        "PATCH /api/v1/settings",
    )
    expected = [f"{op} {mode}" for op in operations for mode in ("positive", "negative")]
    # Logout takes no input at all: schemathesis has nothing to make invalid.
    expected.remove("POST /api/v1/auth/logout negative")
    expected.append("POST /api/v1/auth/logout negative (nothing to negate)")
    assert sorted(exercised) == sorted([*expected, "GET /api/v1/streams/cam"])
