"""The access policy with an in-memory directory: every credential source and refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ripplecast.accounts.credentials import keyed_hash, token_hash
from ripplecast.accounts.policy import (
    AccessPolicy,
    AccessRequest,
    Action,
    ChannelInfo,
    Credentials,
    Principal,
    Role,
    Scope,
    StreamKeyInfo,
    Via,
    VideoInfo,
    Visibility,
)
from ripplecast.accounts.signed_urls import sign

SECRET = b"server secret for tests........."
KEYS = {"k1": b"signing key for tests..........."}
NOW = 1_000_000.0

ALICE = Principal(1, "alice", Role.CREATOR)
BOB = Principal(2, "bob", Role.CREATOR)
ROOT = Principal(3, "root", Role.ADMIN)


@dataclass
class MemoryDirectory:
    channels: dict[str, ChannelInfo] = field(default_factory=dict)
    keys: dict[str, StreamKeyInfo] = field(default_factory=dict)
    sessions: dict[str, Principal] = field(default_factory=dict)
    tokens: dict[str, Principal] = field(default_factory=dict)
    videos: dict[str, VideoInfo] = field(default_factory=dict)

    async def video(self, public_id: str) -> VideoInfo | None:
        return self.videos.get(public_id)

    async def channel(self, slug: str) -> ChannelInfo | None:
        return self.channels.get(slug)

    async def stream_key(self, key_hash: str) -> StreamKeyInfo | None:
        return self.keys.get(key_hash)

    async def session(self, session_hash: str) -> Principal | None:
        return self.sessions.get(session_hash)

    async def api_token(self, token_hash: str) -> Principal | None:
        return self.tokens.get(token_hash)


@pytest.fixture
def directory() -> MemoryDirectory:
    show = ChannelInfo("show", ALICE.user_id, Visibility.PUBLIC)
    secret = ChannelInfo("secret", ALICE.user_id, Visibility.PRIVATE)
    return MemoryDirectory(
        channels={"show": show, "secret": secret},
        keys={
            keyed_hash(SECRET, "key-show"): StreamKeyInfo(show),
            keyed_hash(SECRET, "key-old"): StreamKeyInfo(show, revoked=True),
        },
        sessions={token_hash("sess-alice"): ALICE, token_hash("sess-bob"): BOB},
        tokens={
            token_hash("tok-root"): ROOT,
            token_hash("tok-alice-publish"): Principal(
                1, "alice", Role.CREATOR, frozenset({Scope.PUBLISH})
            ),
        },
    )


def policy(directory: MemoryDirectory, *, open_publishing: bool = False) -> AccessPolicy:
    return AccessPolicy(
        directory,
        secret=SECRET,
        signing_keys=KEYS,
        clock=lambda: NOW,
        open_publishing=open_publishing,
    )


def play(name: str, *, path: str = "", ip: str = "10.0.0.1", **creds: object) -> AccessRequest:
    return AccessRequest(Action.PLAY, f"/live/{name}", Via.HLS, Credentials(**creds), ip, path)  # type: ignore[arg-type]


async def test_publish_with_keys(directory: MemoryDirectory) -> None:
    access = policy(directory)
    ok = await access.authorize(
        AccessRequest(Action.PUBLISH, "", Via.RTMP, Credentials(stream_key="key-show"))
    )
    assert ok.allowed and ok.stream == "show"
    for key, reason in (("key-old", "revoked_key"), ("nope", "bad_key"), ("", "no_key")):
        refused = await access.authorize(
            AccessRequest(Action.PUBLISH, "", Via.RTMP, Credentials(stream_key=key))
        )
        assert not refused.allowed and refused.reason == reason
    assert access.denials == {"rtmp:revoked_key": 1, "rtmp:bad_key": 1, "rtmp:no_key": 1}


async def test_disabled_owner_cannot_publish_and_their_streams_vanish(
    directory: MemoryDirectory,
) -> None:
    show = ChannelInfo("show", 1, Visibility.PUBLIC, owner_disabled=True)
    directory.keys = {keyed_hash(SECRET, "key-show"): StreamKeyInfo(show)}
    directory.channels["show"] = show
    access = policy(directory)
    refused = await access.authorize(
        AccessRequest(Action.PUBLISH, "", Via.RTMP, Credentials(stream_key="key-show"))
    )
    assert refused.reason == "disabled_user"
    assert (await access.authorize(play("show"))).status == 404


async def test_public_plays_private_needs_owner_admin_or_signature(
    directory: MemoryDirectory,
) -> None:
    access = policy(directory)
    assert (await access.authorize(play("show"))).allowed
    anonymous = await access.authorize(play("secret"))
    unknown = await access.authorize(play("nothing"))
    # A private stream answers exactly like an unknown one.
    assert (anonymous.allowed, anonymous.status, anonymous.reason) == (False, 404, "not_found")
    assert (unknown.allowed, unknown.status, unknown.reason) == (False, 404, "not_found")
    assert (await access.authorize(play("secret", session_id="sess-alice"))).allowed
    assert not (await access.authorize(play("secret", session_id="sess-bob"))).allowed
    assert (await access.authorize(play("secret", api_token="tok-root"))).allowed
    # A token without the read scope does not open it, even for the owner.
    assert not (await access.authorize(play("secret", api_token="tok-alice-publish"))).allowed
    signed = sign("/live/secret", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS)
    for path in ("/live/secret.flv", "/live/secret/index.m3u8", "/live/secret/17.ts"):
        assert (await access.authorize(play("secret", path=path, signed=signed))).allowed


async def test_bad_signatures_are_403_before_any_lookup(directory: MemoryDirectory) -> None:
    access = policy(directory)
    expired = sign("/live/secret", expires_at=int(NOW) - 1, key_id="k1", keys=KEYS)
    other = sign("/live/show", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS)
    forged = {
        **sign("/live/secret", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS),
        "rc_sig": "x",
    }
    for signed, reason in ((expired, "expired"), (other, "wrong_path"), (forged, "bad_signature")):
        decision = await access.authorize(play("secret", path="/live/secret/1.ts", signed=signed))
        assert (decision.allowed, decision.status, decision.reason) == (
            False,
            403,
            f"signature_{reason}",
        )
    # The same for a stream that does not exist: a bad signature reveals nothing.
    decision = await access.authorize(play("nothing", path="/live/nothing/1.ts", signed=forged))
    assert decision.status == 403


async def test_ip_bound_signature(directory: MemoryDirectory) -> None:
    access = policy(directory)
    signed = sign("/live/secret", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS, ip="10.0.0.1")
    assert (await access.authorize(play("secret", ip="10.0.0.1", signed=signed))).allowed
    assert (await access.authorize(play("secret", ip="10.0.0.2", signed=signed))).status == 403


async def test_open_mode_plays_and_publishes_unknown_names(directory: MemoryDirectory) -> None:
    access = policy(directory, open_publishing=True)
    published = await access.authorize(
        AccessRequest(Action.PUBLISH, "", Via.RTMP, Credentials(stream_key="demo"))
    )
    assert published.allowed and published.stream == "demo"
    assert (await access.authorize(play("demo"))).allowed
    assert not (await access.authorize(play("secret"))).allowed  # channels keep their rules


async def test_api_scopes_and_roles(directory: MemoryDirectory) -> None:
    access = policy(directory)

    def api(scope: Scope, **creds: str) -> AccessRequest:
        return AccessRequest(Action.API, "/api/v1/x", Via.API, Credentials(**creds), scope=scope)

    assert (await access.authorize(api(Scope.READ))).status == 401
    assert (await access.authorize(api(Scope.READ, session_id="forged"))).status == 401
    assert (await access.authorize(api(Scope.PUBLISH, session_id="sess-alice"))).allowed
    assert (await access.authorize(api(Scope.ADMIN, session_id="sess-alice"))).reason == "not_admin"
    assert (await access.authorize(api(Scope.ADMIN, api_token="tok-root"))).allowed
    assert (
        await access.authorize(api(Scope.READ, api_token="tok-alice-publish"))
    ).reason == "scope"


async def test_videos_follow_the_same_rules_and_only_ready_ones_play(
    directory: MemoryDirectory,
) -> None:
    directory.videos = {
        "pub": VideoInfo("pub", ALICE.user_id, Visibility.PUBLIC, ready=True),
        "hidden": VideoInfo("hidden", ALICE.user_id, Visibility.PRIVATE, ready=True),
        "busy": VideoInfo("busy", ALICE.user_id, Visibility.PUBLIC, ready=False),
        "gone": VideoInfo(
            "gone", ALICE.user_id, Visibility.PUBLIC, ready=True, owner_disabled=True
        ),
    }
    access = policy(directory)

    def watch(public_id: str, *, path: str = "", **creds: object) -> AccessRequest:
        resource = f"/vod/{public_id}"
        return AccessRequest(
            Action.PLAY,
            resource,
            Via.VOD,
            Credentials(**creds),
            "10.0.0.1",
            path or resource,  # type: ignore[arg-type]
        )

    assert (await access.authorize(watch("pub"))).allowed
    for refused in ("hidden", "busy", "gone", "missing"):
        decision = await access.authorize(watch(refused))
        assert (decision.allowed, decision.status, decision.reason) == (False, 404, "not_found")
    assert (await access.authorize(watch("hidden", session_id="sess-alice"))).allowed
    assert not (await access.authorize(watch("hidden", session_id="sess-bob"))).allowed
    assert (await access.authorize(watch("hidden", api_token="tok-root"))).allowed
    signed = sign("/vod/hidden", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS)
    for path in ("/vod/hidden/master.m3u8", "/vod/hidden/720p/seg_00001.ts"):
        assert (await access.authorize(watch("hidden", path=path, signed=signed))).allowed
    # A signature for one video opens no other, and a live stream's none.
    other = await access.authorize(watch("pub", path="/vod/pub/master.m3u8", signed=signed))
    assert other.status == 403
    live = sign("/live/secret", expires_at=int(NOW) + 60, key_id="k1", keys=KEYS)
    assert (await access.authorize(watch("hidden", signed=live))).status == 403
    # Still transcoding: not even its owner plays it.
    assert not (await access.authorize(watch("busy", session_id="sess-alice"))).allowed
