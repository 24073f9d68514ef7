"""The caching rules of media responses (ripplecast.http.caching), case by case."""

from __future__ import annotations

import pytest

from ripplecast.accounts.policy import Decision, Principal, Role
from ripplecast.http.caching import (
    NO_STORE,
    etag_matches,
    grant_seconds_left,
    live_playlist_max_age,
    live_segment_max_age,
    media_cache_headers,
)

NOW = 1_700_000_000.0
ANYONE = Decision(True, "ok")
OWNER = Decision(True, "ok", principal=Principal(7, "jill", Role.CREATOR))


def grant(seconds: float, *, ip: str = "") -> dict[str, str]:
    signed = {"rc_pfx": "/vod/abc", "rc_exp": str(int(NOW + seconds)), "rc_kid": "k", "rc_sig": "s"}
    if ip:
        signed["rc_ip"] = ip
    return signed


def test_open_to_anyone_is_public() -> None:
    headers = media_cache_headers(ANYONE, {}, now=NOW, max_age=9)
    assert headers == {"Cache-Control": "public, max-age=9"}


def test_public_vod_file_bounds_shared_caches_apart_from_browsers() -> None:
    headers = media_cache_headers(
        ANYONE, {}, now=NOW, max_age=31_536_000, shared_max_age=3600, immutable=True
    )
    assert headers == {"Cache-Control": "public, max-age=31536000, s-maxage=3600, immutable"}


def test_a_session_or_token_makes_it_private_whatever_else_came_along() -> None:
    headers = media_cache_headers(
        OWNER, grant(600), now=NOW, max_age=60, private_max_age=30, shared_max_age=10
    )
    assert headers == {"Cache-Control": "private, max-age=30", "Vary": "Cookie, Authorization"}
    assert "public" not in media_cache_headers(OWNER, {}, now=NOW, max_age=60)["Cache-Control"]


def test_a_signed_url_is_shared_under_its_url_until_the_grant_expires() -> None:
    long_grant = media_cache_headers(ANYONE, grant(600), now=NOW, max_age=60)
    assert long_grant == {"Cache-Control": "public, max-age=60"}
    short = media_cache_headers(
        ANYONE, grant(42.9), now=NOW, max_age=31_536_000, shared_max_age=3600, immutable=True
    )
    assert short == {"Cache-Control": "public, max-age=42, s-maxage=42, immutable"}


def test_an_ip_bound_grant_is_private_as_a_cache_cannot_check_the_address() -> None:
    headers = media_cache_headers(
        ANYONE, grant(600, ip="192.0.2.1"), now=NOW, max_age=31_536_000, private_max_age=3600
    )
    assert headers == {"Cache-Control": "private, max-age=600"}


@pytest.mark.parametrize(
    "signed",
    [
        grant(0.5),
        grant(-10),
        {"rc_sig": "s"},
        {"rc_exp": "soon", "rc_sig": "s"},
    ],
)
def test_an_expiring_or_unreadable_grant_is_not_stored(signed: dict[str, str]) -> None:
    assert media_cache_headers(ANYONE, signed, now=NOW, max_age=60) == {"Cache-Control": NO_STORE}


def test_grant_seconds_left() -> None:
    assert grant_seconds_left(grant(90), now=NOW) == 90
    assert grant_seconds_left(grant(-1), now=NOW) == 0
    assert grant_seconds_left({}, now=NOW) == 0


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"a1"', True),
        ('W/"a1"', True),
        ('"zz", "a1"', True),
        ('"zz",W/"a1" ', True),
        ("*", True),
        ('"a2"', False),
        ("a1", False),
        ("", False),
    ],
)
def test_if_none_match_uses_weak_comparison(header: str, matches: bool) -> None:
    assert etag_matches(header, '"a1"') is matches


def test_live_freshness_follows_the_segment_duration() -> None:
    assert [live_playlist_max_age(s) for s in (0.5, 1, 2, 3, 4, 6, 10)] == [1, 1, 1, 1, 2, 3, 5]
    assert live_segment_max_age(2.0, 9) == 18
    assert live_segment_max_age(1.5, 5) == 8
