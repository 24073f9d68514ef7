"""Every HTTP request gets an id: the X-Request-Id it came with (from a balancer or a client) when
that looks like one, else a new one. It
is echoed in the response and carried by every log line written while handling the request
(`ripplecast.logs.REQUEST_ID`), so one request can be followed through the logs of every node.
The stream a live or VOD request names is set as `ripplecast.logs.STREAM`."""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from ripplecast.logs import REQUEST_ID, STREAM

HEADER = "X-Request-Id"
_USABLE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What an incoming id may look like (it lands in logs: no spaces, no controls)."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set the request's id and stream for its log lines, and echo the id."""
    incoming = request.headers.get(HEADER, "")
    request_id = incoming if _USABLE.fullmatch(incoming) else secrets.token_hex(8)
    id_token = REQUEST_ID.set(request_id)
    name = request.match_info.get("name", "") or request.match_info.get("video", "")
    stream_token = STREAM.set(name[:255])
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[HEADER] = request_id
        raise
    finally:
        STREAM.reset(stream_token)
        REQUEST_ID.reset(id_token)
    if not response.prepared:
        response.headers[HEADER] = request_id
    return response
