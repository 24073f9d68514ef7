"""The web interface: server-rendered pages (Jinja2) for viewers, creators and administrators.

Pages: `/` (live now, recent videos), `/c/SLUG` (a channel and its live player), `/v/ID` (a
video), `/search`, `/login`, `/register`, `/logout`, `/account/password`, `/dashboard`
(channels, stream keys, OBS set-up, live stats), `/dashboard/upload`, `/dashboard/videos`,
`/admin`; `/static/...` serves the interface's CSS and JavaScript and, under `/static/vendor/`,
the player libraries installed by npm.

Layout: `PageRoutes` builds one `PageContext` (`base`: visitor, CSRF, rendering, answers) and
hands it to a route group per responsibility: `watch`, `accounts`, `dashboard` (channels and
stream keys), `videos` (upload, the creator's videos), `admin`; `assets` serves the static
files. What can be computed without HTTP lives in `ripplecast.web.views`.

Invariants:
- Who the visitor is comes from the session cookie only (the API's `rc_session`), checked by
  the one access policy; pages that show media ask that policy exactly as the media routes do,
  so a private channel or video is a 404 for anyone it does not open for.
- Every POST carries a CSRF token bound to the session (`accounts.csrf`) or, before login, to
  a random HttpOnly cookie; a missing or wrong token is a 403 and changes nothing.
- Everything but playback works without JavaScript: every action is a plain form. Pages carry
  no inline script, and every page answer has a Content-Security-Policy allowing this origin's
  scripts only.
- Stream keys are shown once, in the answer to the form that made them, and never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ripplecast.accounts.logins import Logins
from ripplecast.accounts.service import Accounts
from ripplecast.config import Settings
from ripplecast.http.api.streams import HubView, LiveView, Publishers
from ripplecast.http.api.videos import Signer
from ripplecast.http.live import Authorize
from ripplecast.http.pages.accounts import AccountPages
from ripplecast.http.pages.admin import AdminPages
from ripplecast.http.pages.assets import AssetRoutes
from ripplecast.http.pages.base import FORM_COOKIE, PageContext, RouteGroup
from ripplecast.http.pages.dashboard import DashboardPages, RtmpPort
from ripplecast.http.pages.videos import VideoPages
from ripplecast.http.pages.watch import WatchPages
from ripplecast.live.hub import Hub
from ripplecast.vod.service import Videos
from ripplecast.vod.uploads import Uploads
from ripplecast.web import default_vendor_dir
from ripplecast.web.views import Visitor

__all__ = ["FORM_COOKIE", "PageRoutes", "RtmpPort", "Visitor"]


class PageRoutes:
    """The page handlers of a node; `register(app)` adds them.

    Without `videos` and `uploads` the video pages answer 404 and the others show no videos;
    `rtmp_port` (else the publishers' own `port`) is the RTMP port the dashboard tells OBS.
    `live` says which streams are live (the cluster's directory on a web node); without it,
    `hub` does, and an admin's kick goes to `publishers`."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        authorize: Authorize,
        *,
        accounts: Accounts,
        logins: Logins,
        secret: bytes,
        videos: Videos | None = None,
        uploads: Uploads | None = None,
        signer: Signer | None = None,
        publishers: Publishers | None = None,
        rtmp_port: Callable[[], int] | None = None,
        vendor_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        live: LiveView | None = None,
    ) -> None:
        context = PageContext(
            settings,
            live if live is not None else HubView(hub, publishers=publishers, clock=clock),
            authorize,
            accounts=accounts,
            secret=secret,
            videos=videos,
            uploads=uploads,
        )
        vendor = vendor_dir if vendor_dir is not None else default_vendor_dir()
        # In this order on the router, as the page list above reads.
        self._groups: tuple[RouteGroup, ...] = (
            WatchPages(context, signer=signer),
            AccountPages(context, logins=logins),
            DashboardPages(context, publishers=publishers, rtmp_port=rtmp_port),
            VideoPages(context),
            AdminPages(context),
            AssetRoutes(vendor),
        )

    def register(self, app: web.Application) -> None:
        """Add the page routes and the static files to `app`."""
        for group in self._groups:
            group.add_routes(app.router)
