"""Password hashing, token hashing and signed URLs."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from ripplecast.accounts.credentials import (
    PasswordPolicy,
    Passwords,
    keyed_hash,
    new_token,
    token_hash,
)
from ripplecast.accounts.signed_urls import SignatureError, covers, sign, signed_query, verify

FAST = PasswordPolicy(time_cost=1, memory_cost_kib=8 * 1024)
KEYS = {"k1": b"first secret key of 32 bytes...!", "k2": b"second secret key of 32 bytes..!"}


def test_passwords_hash_verify_and_rehash() -> None:
    passwords = Passwords(FAST)
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse") == (True, False)
    assert passwords.verify(stored, "wrong horse") == (False, False)
    assert passwords.verify("not a hash", "x") == (False, False)
    # Parameters changed since the hash was made: it matches and asks for a rehash.
    stronger = Passwords(PasswordPolicy(time_cost=2, memory_cost_kib=8 * 1024))
    assert stronger.verify(stored, "correct horse") == (True, True)
    # Hashes from other argon2 settings (e.g. an older release) still verify.
    legacy = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=2).hash("pw")
    assert passwords.verify(legacy, "pw") == (True, True)
    passwords.dummy_verify()


def test_password_strength() -> None:
    passwords = Passwords(FAST)
    assert passwords.check_strength("short") == "password must be at least 8 characters"
    assert passwords.check_strength("x" * 2000) == "password must be at most 1024 characters"
    assert passwords.check_strength("long enough") is None


def test_tokens_are_random_and_hashes_stable() -> None:
    a, b = new_token("rct_"), new_token("rct_")
    assert a != b and a.startswith("rct_") and len(a) >= 40
    assert token_hash(a) == token_hash(a) != token_hash(b)
    assert keyed_hash(b"s1", a) != keyed_hash(b"s2", a)  # the server secret matters
    assert len(keyed_hash(b"s1", a)) == 64


def test_undecodable_credentials_hash_instead_of_raising() -> None:
    # aiohttp hands header bytes that are not UTF-8 over as surrogates.
    hostile = b"\xe7\xff token".decode("utf-8", "surrogateescape")
    assert len(token_hash(hostile)) == 64
    assert token_hash(hostile) != token_hash("\ufffd\ufffd token")
    assert len(keyed_hash(b"k" * 32, hostile)) == 64


def test_signed_url_round_trip_and_scope() -> None:
    query = sign("/live/show", expires_at=2000, key_id="k2", keys=KEYS)
    for path in ("/live/show", "/live/show.flv", "/live/show/index.m3u8", "/live/show/12.ts"):
        grant = verify(query, path=path, client_ip="10.0.0.1", now=1999, keys=KEYS)
        assert grant.prefix == "/live/show" and grant.key_id == "k2"
    for path in ("/live/showtime.flv", "/live/other.flv", "/live/sho", "/live/show.x/y"):
        with pytest.raises(SignatureError) as error:
            verify(query, path=path, client_ip="10.0.0.1", now=1999, keys=KEYS)
        assert error.value.reason == "wrong_path"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rc_sig": "AAAA"}, "bad_signature"),
        ({"rc_exp": "9999999999"}, "bad_signature"),  # extending the expiry breaks the MAC
        ({"rc_pfx": "/live"}, "bad_signature"),  # widening the prefix breaks it too
        ({"rc_ip": "10.9.9.9"}, "bad_signature"),
        ({"rc_kid": "k9"}, "unknown_key"),
        ({"rc_exp": "soon"}, "malformed"),
        ({"rc_pfx": "/live/../etc"}, "malformed"),
    ],
)
def test_forged_signed_urls_are_refused(change: dict[str, str], reason: str) -> None:
    query = sign("/live/show", expires_at=2000, key_id="k1", keys=KEYS, ip="10.0.0.1")
    forged = {**query, **change}
    with pytest.raises(SignatureError) as error:
        verify(forged, path="/live/show.flv", client_ip="10.0.0.1", now=1000, keys=KEYS)
    assert error.value.reason == reason
    assert query["rc_sig"] not in str(error.value)


def test_expired_wrong_ip_and_missing() -> None:
    query = sign("/live/show", expires_at=2000, key_id="k1", keys=KEYS, ip="10.0.0.1")
    with pytest.raises(SignatureError, match="expired"):
        verify(query, path="/live/show.flv", client_ip="10.0.0.1", now=2001, keys=KEYS)
    with pytest.raises(SignatureError, match="another client"):
        verify(query, path="/live/show.flv", client_ip="10.0.0.2", now=1000, keys=KEYS)
    with pytest.raises(SignatureError, match="no signature"):
        verify({}, path="/live/show.flv", client_ip="10.0.0.1", now=1000, keys=KEYS)


def test_key_rotation() -> None:
    old = sign("/live/a", expires_at=2000, key_id="k1", keys=KEYS)
    retired = {"k2": KEYS["k2"]}
    with pytest.raises(SignatureError, match="unknown or retired"):
        verify(old, path="/live/a.flv", client_ip="", now=1, keys=retired)
    assert "rc_sig=" in signed_query("/live/a", expires_at=2000, key_id="k2", keys=retired)


def test_covers_directory_prefix() -> None:
    assert covers("/vod/7/", "/vod/7/720p/1.ts")
    assert not covers("/vod/7/", "/vod/70/master.m3u8")
    assert not covers("/vod/7", "/vod/70/master.m3u8")


def test_csrf_tokens_are_bound_to_the_session() -> None:
    from ripplecast.accounts.csrf import check_csrf, csrf_token

    token = csrf_token(b"secret", "session-a")
    assert check_csrf(b"secret", "session-a", token)
    assert not check_csrf(b"secret", "session-b", token)
    assert not check_csrf(b"other secret", "session-a", token)
    assert not check_csrf(b"secret", "session-a", "")
    assert not check_csrf(b"secret", "", token)
