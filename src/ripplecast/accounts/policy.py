"""The one access policy: `authorize(AccessRequest)` decides every way in.

RTMP publish and play, HTTP-FLV, HLS playlists and every segment, the API and VOD all
describe what they want as an `AccessRequest` and get a `Decision`. Credentials come from four
sources — a stream key, a session cookie, an API token, a signed URL — and the policy looks
them up through the small `Directory` interface (the database, behind a cache).

Rules, in order:
- **publish**: the stream key must belong to a channel whose owner is not disabled and must not
  be revoked; the decision names the channel's slug as the stream to publish.
- **play**: a channel that is public or unlisted plays for anyone. A private one plays for a
  valid signed URL covering the resource, or for its owner or an admin (session or API token
  with the `read` scope). A stream that is not a channel plays only in open-publishing mode.
- **play a video** (`/vod/ID`): the same rule on the video's visibility and owner; a video
  that is not ready (still transcoding, or failed) is not found.
- **api**: a session, or an API token carrying the scope asked for; admin actions need the
  admin role.
- A signature that is present but invalid is refused with 403 before anything is looked up,
  so a forged URL learns nothing. Every other refusal of a play is a 404, the same answer an
  unknown stream gets, so nobody can probe which private streams exist.

No secret reaches a log line or a `Decision`: reasons are short stable tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ripplecast.accounts.cluster_tokens import ClusterTokenError, verify_pull_token
from ripplecast.accounts.credentials import keyed_hash, token_hash
from ripplecast.accounts.signed_urls import PARAMS, SignatureError, verify
from ripplecast.db.models import Role, Visibility

__all__ = [
    "AccessPolicy",
    "AccessRequest",
    "Action",
    "ChannelInfo",
    "Credentials",
    "Decision",
    "Directory",
    "Principal",
    "Role",
    "Scope",
    "StreamKeyInfo",
    "Via",
    "VideoInfo",
    "Visibility",
]


class Action(StrEnum):
    """What the request wants to do."""

    PUBLISH = "publish"
    PLAY = "play"
    API = "api"


class Via(StrEnum):
    """How the request came in (for counters and logs)."""

    RTMP = "rtmp"
    HTTP_FLV = "http-flv"
    HLS = "hls"
    API = "api"
    VOD = "vod"


class Scope(StrEnum):
    """What an API token may do."""

    READ = "read"
    PUBLISH = "publish"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything the request carried that might prove who it is."""

    stream_key: str = ""
    """The RTMP publishing name (a stream key)."""
    session_id: str = ""
    """The session cookie's value."""
    api_token: str = ""
    """A bearer token from the Authorization header."""
    signed: Mapping[str, str] = field(default_factory=dict)
    """The signed-URL query parameters, if any (`rc_*`)."""
    cluster_token: str = ""
    """A token from another node of the cluster (an edge pulling a live stream)."""


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One attempt to get in."""

    action: Action
    """publish, play or api."""
    resource: str
    """What is asked for: `/live/NAME` for a stream (any protocol), `/api/...` for the API."""
    via: Via
    """The protocol it came by."""
    credentials: Credentials
    """What it carried."""
    ip: str = ""
    """The client address."""
    path: str = ""
    """The exact path requested (a segment, a playlist); a signed URL must cover it."""
    scope: Scope = Scope.READ
    """For the API: the scope the operation needs."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a credential says the client is."""

    user_id: int
    username: str
    role: Role
    scopes: frozenset[Scope] = frozenset(Scope)
    """What the credential allows (a session allows everything its role allows)."""


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What the policy needs to know about a channel."""

    slug: str
    owner_id: int
    visibility: Visibility
    owner_disabled: bool = False


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the policy needs to know about a video."""

    public_id: str
    owner_id: int
    visibility: Visibility
    ready: bool
    owner_disabled: bool = False


@dataclass(frozen=True, slots=True)
class StreamKeyInfo:
    """What the policy needs to know about a stream key."""

    channel: ChannelInfo
    revoked: bool = False
    id: int = 0
    """The key's id, so a live publisher can be found when its key is revoked."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, and what to tell the client."""

    allowed: bool
    reason: str
    """A short stable token for counters: ok, bad_key, bad_signature, not_found, ..."""
    status: int = 200
    """The HTTP status to answer with when refused (401, 403, 404)."""
    principal: Principal | None = None
    stream: str = ""
    """For an allowed publish: the stream name to publish as."""
    credential_id: int = 0
    """For an allowed publish: the stream key's id (0 when not from the database)."""


class Directory(Protocol):
    """Lookups the policy needs; the database implements it (behind a cache)."""

    async def channel(self, slug: str) -> ChannelInfo | None:
        """The channel whose slug (stream name) is `slug`."""

    async def video(self, public_id: str) -> VideoInfo | None:
        """The video whose public id is `public_id`."""

    async def stream_key(self, key_hash: str) -> StreamKeyInfo | None:
        """The stream key stored under `key_hash` (a keyed hash of the key)."""

    async def session(self, session_hash: str) -> Principal | None:
        """The user of a live, unexpired session stored under `session_hash`."""

    async def api_token(self, token_hash: str) -> Principal | None:
        """The user and scopes of an unrevoked, unexpired API token stored under `token_hash`."""


VOD_PREFIX = "/vod/"
"""Resources under this prefix are videos (`/vod/PUBLIC_ID`), the rest live streams."""


def _refuse(reason: str, status: int) -> Decision:
    return Decision(False, reason, status)


class AccessPolicy:
    """`authorize()` for every protocol (see module docstring)."""

    def __init__(
        self,
        directory: Directory,
        *,
        secret: bytes,
        signing_keys: Mapping[str, bytes],
        clock: Callable[[], float],
        open_publishing: bool = False,
        cluster_secret: bytes | None = None,
    ) -> None:
        self._directory = directory
        self._cluster_secret = cluster_secret
        self._secret = secret
        self._signing_keys = signing_keys
        self._clock = clock
        self._open = open_publishing
        self.denials: dict[str, int] = {}
        """Refusals by `via:reason`, for logs and metrics."""

    async def authorize(self, request: AccessRequest) -> Decision:
        """Decide `request`; never raises for bad credentials (they are refusals)."""
        if request.action is Action.PUBLISH:
            decision = await self._publish(request)
        elif request.action is Action.PLAY:
            decision = await self._play(request)
        else:
            decision = await self._api(request)
        if not decision.allowed:
            key = f"{request.via}:{decision.reason}"
            self.denials[key] = self.denials.get(key, 0) + 1
        return decision

    def _cluster_pull(self, request: AccessRequest) -> Decision:
        """Another node pulling a live stream: its token, not the viewer rules, decides (the
        edge applied those to its own viewers)."""
        if self._cluster_secret is None or not request.resource.startswith("/live/"):
            return _refuse("cluster_not_accepted", 403)
        try:
            verify_pull_token(
                self._cluster_secret,
                request.resource,
                request.credentials.cluster_token,
                now=self._clock(),
            )
        except ClusterTokenError as exc:
            return _refuse(f"cluster_{exc.reason}", 403)
        return Decision(True, "cluster")

    async def principal(self, credentials: Credentials) -> Principal | None:
        """Who the session or API token says the client is (None if neither is valid)."""
        if credentials.session_id:
            found = await self._directory.session(token_hash(credentials.session_id))
            if found is not None:
                return found
        if credentials.api_token:
            return await self._directory.api_token(token_hash(credentials.api_token))
        return None

    async def _publish(self, request: AccessRequest) -> Decision:
        key = request.credentials.stream_key
        if not key:
            return _refuse("no_key", 401)
        info = await self._directory.stream_key(keyed_hash(self._secret, key))
        if info is None:
            if self._open:
                return Decision(True, "open", stream=key)
            return _refuse("bad_key", 403)
        if info.revoked:
            return _refuse("revoked_key", 403)
        if info.channel.owner_disabled:
            return _refuse("disabled_user", 403)
        return Decision(True, "ok", stream=info.channel.slug, credential_id=info.id)

    async def _play(self, request: AccessRequest) -> Decision:
        if request.credentials.cluster_token:
            return self._cluster_pull(request)
        signed = request.credentials.signed
        grant_ok = False
        if any(name in signed for name in PARAMS):
            try:
                verify(
                    signed,
                    path=request.path or request.resource,
                    client_ip=request.ip,
                    now=self._clock(),
                    keys=self._signing_keys,
                )
            except SignatureError as exc:
                return _refuse(f"signature_{exc.reason}", 403)
            grant_ok = True
        name = request.resource.rsplit("/", 1)[-1]
        if request.resource.startswith(VOD_PREFIX):
            return await self._play_video(request, name, grant_ok)
        channel = await self._directory.channel(name)
        if channel is None:
            if self._open:
                return Decision(True, "open")
            return _refuse("not_found", 404)
        if channel.owner_disabled:
            return _refuse("not_found", 404)
        if channel.visibility is not Visibility.PRIVATE or grant_ok:
            return Decision(True, "ok")
        principal = await self.principal(request.credentials)
        if principal is not None and self._may_watch_private(principal, channel):
            return Decision(True, "ok", principal=principal)
        # Same answer as an unknown stream: private streams cannot be probed.
        return _refuse("not_found", 404)

    async def _play_video(self, request: AccessRequest, public_id: str, grant_ok: bool) -> Decision:
        video = await self._directory.video(public_id)
        if video is None or not video.ready or video.owner_disabled:
            return _refuse("not_found", 404)
        if video.visibility is not Visibility.PRIVATE or grant_ok:
            return Decision(True, "ok")
        principal = await self.principal(request.credentials)
        if principal is not None and self._may_watch_private(principal, video):
            return Decision(True, "ok", principal=principal)
        return _refuse("not_found", 404)

    @staticmethod
    def _may_watch_private(principal: Principal, thing: ChannelInfo | VideoInfo) -> bool:
        if Scope.READ not in principal.scopes:
            return False
        return principal.role is Role.ADMIN or principal.user_id == thing.owner_id

    async def _api(self, request: AccessRequest) -> Decision:
        principal = await self.principal(request.credentials)
        if principal is None:
            return _refuse("unauthenticated", 401)
        if request.scope not in principal.scopes:
            return _refuse("scope", 403)
        if request.scope is Scope.ADMIN and principal.role is not Role.ADMIN:
            return _refuse("not_admin", 403)
        return Decision(True, "ok", principal=principal)
