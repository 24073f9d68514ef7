"""The interface's static files: `/static/NAME` (its own CSS and JavaScript) and
`/static/vendor/NAME` (the player libraries installed by npm).

Invariant: only names from a fixed set are served (`static_files()`, `VENDOR_FILES`); no path
from a request is ever joined to a folder.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ripplecast.http.pages.base import log
from ripplecast.web import VENDOR_FILES, static_files

__all__ = ["AssetRoutes"]

_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class AssetRoutes:
    """Serves the static files (plain handlers: no visitor, no page headers)."""

    def __init__(self, vendor_dir: Path) -> None:
        self._vendor_dir = vendor_dir
        self._static = static_files()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        router.add_get("/static/vendor/{name}", self.vendor_file)
        router.add_get("/static/{name}", self.static_file)

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        """The interface's own CSS and JavaScript (a fixed set of names)."""
        path = self._static.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such file\n")
        return web.FileResponse(path, headers=_ASSET_HEADERS)

    async def vendor_file(self, request: web.Request) -> web.StreamResponse:
        """The player libraries, from `web/node_modules` (installed by `npm ci --prefix web`)."""
        relative = VENDOR_FILES.get(request.match_info["name"])
        if relative is None:
            raise web.HTTPNotFound(text="no such file\n")
        path = self._vendor_dir / relative
        if not path.is_file():
            log.warning("web: %s is missing: run `npm ci --prefix web` (make does)", path)
            raise web.HTTPNotFound(
                text=f"{request.match_info['name']} is not installed: run `npm ci --prefix web`\n"
            )
        return web.FileResponse(path, headers=_ASSET_HEADERS)
