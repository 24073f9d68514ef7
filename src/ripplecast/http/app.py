"""The node's aiohttp application: live media routes and the operations endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ripplecast.accounts.logins import Logins
from ripplecast.accounts.service import Accounts
from ripplecast.cluster import NodeRegistry
from ripplecast.config import Settings
from ripplecast.db.engine import Database
from ripplecast.http.api import Publishers, install_api, streams_router
from ripplecast.http.api.auth import auth_router
from ripplecast.http.api.channels import channels_router
from ripplecast.http.api.cluster import cluster_router
from ripplecast.http.api.streams import LiveView
from ripplecast.http.api.users import users_router
from ripplecast.http.api.videos import Signer, videos_router
from ripplecast.http.api.webhooks import webhooks_router
from ripplecast.http.client_address import client_address_middleware
from ripplecast.http.live import Authorize, LiveRoutes, Notify, ignore_event
from ripplecast.http.pages import PageRoutes
from ripplecast.http.redirect import RedirectRoutes
from ripplecast.http.request_ids import request_id_middleware
from ripplecast.http.vod import VodRoutes
from ripplecast.live.hub import Hub
from ripplecast.metrics import NodeMetrics
from ripplecast.protocols.proxy_header import TrustedProxies
from ripplecast.storage import Storage
from ripplecast.vod.service import Videos
from ripplecast.vod.uploads import Uploads
from ripplecast.webhooks.registry import WebhookRegistry

LIVE_ROUTES = web.AppKey("live_routes", LiveRoutes)
VOD_ROUTES = web.AppKey("vod_routes", VodRoutes)


def create_app(
    settings: Settings,
    hub: Hub,
    authorize: Authorize,
    *,
    ready: Callable[[], Awaitable[tuple[bool, dict[str, object]]]],
    notify: Notify = ignore_event,
    publishers: Publishers | None = None,
    accounts: tuple[Accounts, Logins, bytes] | None = None,
    db: Database | None = None,
    vod: tuple[Videos, Uploads, Storage, Signer] | None = None,
    rtmp_port: Callable[[], int] | None = None,
    vod_media: Storage | None = None,
    cluster: NodeRegistry | None = None,
    live_view: LiveView | None = None,
    metrics: NodeMetrics | None = None,
) -> web.Application:
    """Build the application; `ready` answers /readyz (ready?, and a JSON body saying why);
    `notify` is told about HTTP-FLV plays (on_play/on_stop), see `Notify`; `publishers` lets
    the API's kick disconnect a stream's publisher (the RTMP server). With `accounts`, the web
    pages are served too; `rtmp_port` (else the publishers' own `port`) is the RTMP port they
    show in the OBS set-up. `vod_media` is the storage `/vod/...` is served from (an edge's
    cache in front of the shared storage); without it, `vod`'s storage. With `cluster` (the
    node registry), `/redirect/live/...` and `/redirect/vod/...` send viewers to the
    least-loaded edge and the API lists the nodes (`GET /api/v1/cluster/nodes`, admins).
    `live_view` is where the streams API and the pages learn which streams are live (a web
    node: the cluster's live directory); without it, `hub`. With `metrics`, `GET /metrics`
    serves them and every response's latency is observed by route."""
    proxies = TrustedProxies(settings.trusted_proxies)
    middlewares = [
        *([client_address_middleware(proxies)] if proxies else []),
        request_id_middleware,
    ]
    if metrics is not None:
        middlewares.insert(0, metrics.http_middleware)  # outermost: times all the others
    app = web.Application(client_max_size=settings.api_max_body_bytes, middlewares=middlewares)
    if metrics is not None:
        app.on_response_prepare.append(metrics.on_response_prepare)
        app.router.add_get("/metrics", metrics.handle)
    live = LiveRoutes(settings, hub, authorize, notify=notify)
    live.register(app)
    app[LIVE_ROUTES] = live

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        ok, body = await ready()
        return web.json_response(
            body, status=200 if ok else 503, headers={"Cache-Control": "no-store"}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    streams = streams_router(
        hub, max_name_length=settings.stream_name_max_length, publishers=publishers, live=live_view
    )
    routers = [streams]
    csrf_secret = None
    if accounts is not None:
        service, logins, csrf_secret = accounts
        routers.append(
            auth_router(
                service, logins, secret=csrf_secret, registration_open=settings.registration_open
            )
        )
        routers.append(channels_router(service))
        routers.append(users_router(service))
    if db is not None:
        allow_private = settings.webhook_allow_private_addresses
        routers.append(webhooks_router(WebhookRegistry(db, allow_private=allow_private)))
    media = vod_media if vod_media is not None else vod[2] if vod is not None else None
    if media is not None:
        vod_routes = VodRoutes(
            media,
            authorize,
            presigned_get=settings.s3_presigned_get,
            shared_max_age=settings.vod_cdn_max_age_seconds,
        )
        vod_routes.register(app)
        app[VOD_ROUTES] = vod_routes
    if vod is not None:
        videos, uploads, _storage, signer = vod
        routers.append(videos_router(videos, uploads, signer=signer))
    if cluster is not None:
        RedirectRoutes(cluster).register(app)
        routers.append(cluster_router(cluster))
    if accounts is not None:
        service, logins, secret = accounts
        PageRoutes(
            settings,
            hub,
            authorize,
            accounts=service,
            logins=logins,
            secret=secret,
            videos=vod[0] if vod is not None else None,
            uploads=vod[1] if vod is not None else None,
            signer=vod[3] if vod is not None else None,
            publishers=publishers,
            rtmp_port=rtmp_port,
            vendor_dir=settings.web_vendor_dir,
            live=live_view,
        ).register(app)
    install_api(app, routers, authorize=authorize, csrf_secret=csrf_secret)
    return app
