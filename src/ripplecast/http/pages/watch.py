"""The pages for watching: `/` (live now, recent videos), `/c/SLUG` (a channel and its live
player), `/v/ID` (a video) and `/search`.

Invariant: a page that shows media asks the access policy exactly as the media routes do, so a
private channel or video is a 404 for anyone it does not open for; the media URLs a page hands
the player carry a signed grant when the visitor may play but the player could not on its own.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from ripplecast.db.models import VideoState, Visibility
from ripplecast.http.api.videos import Signer
from ripplecast.http.live import signed_params
from ripplecast.http.pages.base import LIST_LIMIT, PageContext, video_id
from ripplecast.live.names import InvalidStreamName, validate_stream_name
from ripplecast.vod.service import VideoNotFound, Viewer
from ripplecast.web.views import (
    ChannelCard,
    LiveCard,
    PageError,
    VideoCard,
    Visitor,
    channel_card,
    channel_matches,
    query_suffix,
    search_text,
    video_card,
    video_renditions,
)

__all__ = ["WatchPages"]

HOME_VIDEOS = 24
CHANNEL_VIDEOS = 12
SEARCH_SCAN = 1000
"""Search looks at most at this many public channels (titles are matched here, not in SQL)."""


class WatchPages:
    """The viewers' pages."""

    def __init__(self, context: PageContext, *, signer: Signer | None) -> None:
        self._ctx = context
        self._signer = signer

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        page = self._ctx.page
        router.add_get("/", page(self.home))
        router.add_get("/c/{slug}", page(self.channel))
        router.add_get("/v/{id}", page(self.video))
        router.add_get("/search", page(self.search))

    async def home(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Live channels now, with their viewers, and the newest public videos."""
        live = await self._live_cards(request, visitor)
        videos = await self._public_videos(limit=HOME_VIDEOS)
        return self._ctx.render(visitor, "home.html", live=live, videos=videos)

    async def _live_cards(self, request: web.Request, visitor: Visitor) -> list[LiveCard]:
        cards: list[LiveCard] = []
        for info in await self._ctx.active_streams():
            if len(cards) >= LIST_LIMIT:
                break
            channel = await self._ctx.channel_or_none(info.name)
            # Listed: public channels (and, in open mode, streams without a channel); the
            # visitor's own channels whatever their visibility.
            hidden = channel is not None and channel.visibility is not Visibility.PUBLIC
            if hidden and channel is not None and not visitor.owns(channel):
                continue
            if not await self._ctx.may_play(request, f"/live/{info.name}"):
                continue
            video = info.video
            resolution = f"{video.width}x{video.height}" if video and video.width else ""
            cards.append(
                LiveCard(
                    slug=info.name,
                    title=(channel.title if channel is not None else "") or info.name,
                    viewers=info.viewers.total,
                    uptime_seconds=info.uptime_seconds,
                    resolution=resolution,
                )
            )
        return cards

    async def channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """A channel's page with its live player (or the offline slate) and its videos."""
        slug = self._stream_name(request.match_info["slug"])
        if not await self._ctx.may_play(request, f"/live/{slug}"):
            raise PageError(404, "There is no such channel.")
        channel = await self._ctx.channel_or_none(slug)
        private = channel is not None and channel.visibility is Visibility.PRIVATE
        suffix = query_suffix(self._media_query(request, f"/live/{slug}", sign=private))
        videos = []
        if channel is not None:
            videos = await self._public_videos(owner_id=channel.owner_id, limit=CHANNEL_VIDEOS)
        live = await self._ctx.is_live(slug)
        return self._ctx.render(
            visitor,
            "channel.html",
            slug=slug,
            channel=channel_card(channel, live=live) if channel else None,
            title=(channel.title if channel is not None else "") or slug,
            live=live,
            owner=channel is not None and visitor.owns(channel),
            protocol="flv" if request.query.get("p") == "flv" else "hls",
            hls_url=f"/live/{slug}/index.m3u8{suffix}",
            flv_url=f"/live/{slug}.flv{suffix}",
            status_url=f"/api/v1/streams/{slug}{suffix}",
            videos=videos,
        )

    async def video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """A video's page: the player when it is ready, its progress while it is not."""
        videos, _ = self._ctx.need_vod()
        public_id = video_id(request)
        try:
            # Looked up as an admin; who may see it is decided below, by the access policy.
            video = await videos.get(public_id, Viewer(admin=True))
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        mine = visitor.viewer.owns(video)
        ready = video.state is VideoState.READY
        if ready:
            if not await self._ctx.may_play(request, f"/vod/{public_id}"):
                raise PageError(404, "There is no such video.")
        elif not mine:
            raise PageError(404, "There is no such video.")
        private_mine = video.visibility is Visibility.PRIVATE and mine
        query = self._media_query(request, f"/vod/{public_id}", sign=private_mine)
        suffix = query_suffix(query)
        has_picture = ready and video.width is not None
        return self._ctx.render(
            visitor,
            "video.html",
            video=video_card(video, query=query, job=video.job),
            created=video.created_at,
            ready=ready,
            mine=mine,
            renditions=video_renditions(video) if ready else [],
            master_url=f"/vod/{public_id}/master.m3u8{suffix}" if ready else "",
            thumbnails_url=f"/vod/{public_id}/thumbs.vtt{suffix}" if has_picture else "",
        )

    async def search(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Public videos and channels whose title holds the words asked for."""
        query = search_text(request.query.get("q", ""))
        videos = []
        channels: list[ChannelCard] = []
        if query:
            videos = await self._public_videos(search=query, limit=LIST_LIMIT)
            found, _ = await self._ctx.accounts.channels(listed_only=True, limit=SEARCH_SCAN)
            matched = [c for c in found if channel_matches(c, query)][:LIST_LIMIT]
            live = await self._ctx.live_names([c.slug for c in matched])
            channels = [channel_card(c, live=c.slug in live) for c in matched]
        return self._ctx.render(visitor, "search.html", q=query, videos=videos, channels=channels)

    # ------------------------------------------------------------------------------------

    async def _public_videos(
        self, *, limit: int, owner_id: int | None = None, search: str = ""
    ) -> list[VideoCard]:
        """Cards of the public videos an anonymous viewer sees ([] without videos on demand)."""
        if self._ctx.videos is None:
            return []
        rows, _ = await self._ctx.videos.list(
            Viewer(), owner_id=owner_id, search=search, limit=limit
        )
        return [video_card(v) for v in rows]

    def _stream_name(self, raw: str) -> str:
        try:
            return validate_stream_name(raw, max_length=self._ctx.settings.stream_name_max_length)
        except InvalidStreamName:
            raise PageError(404, "There is no such channel.") from None

    def _media_query(self, request: web.Request, resource: str, *, sign: bool) -> str:
        """The query string the player adds to the media URLs of `resource`: a fresh grant
        when `sign` (a private resource this visitor may play), else the signed-URL
        parameters this page was opened with, if any."""
        if sign and self._signer is not None:
            return self._signer(resource)
        if signed := signed_params(request):
            return urlencode(signed)
        return ""
