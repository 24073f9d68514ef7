"""Webhook signatures, URL checks and backoff: pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from ripplecast.webhooks import check_url, require_url, sign, verify
from ripplecast.webhooks.dispatcher import EVENT_NAME, backoff_delay
from ripplecast.webhooks.net import (
    BlockedAddress,
    PublicAddressResolver,
    WebhookURLError,
    is_public_address,
    redact_url,
)
from ripplecast.webhooks.signing import encode_envelope, iso_time, request_headers

KEY = b"whsec-unit"
BODY = b'{"event":"on_publish","id":"evt_1","time":"t","data":{}}'
T = 1_700_000_000


def test_sign_is_stripe_style_hmac_sha256() -> None:
    expected = hmac.new(KEY, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(KEY, T, BODY) == f"t={T},v1={expected}"


def test_verify_accepts_a_fresh_signature_either_side_of_now() -> None:
    header = sign(KEY, T, BODY)
    assert verify(KEY, header, BODY, now=T)
    assert verify(KEY, header, BODY, now=T + 300)
    assert verify(KEY, header, BODY, now=T - 300)  # receiver's clock behind ours
    assert verify(KEY, header, BODY, now=T + 30, tolerance=30)


@pytest.mark.parametrize(
    ("key", "body", "now"),
    [
        (b"other", BODY, T),  # wrong secret
        (KEY, BODY + b" ", T),  # tampered body
        (KEY, BODY, T + 301),  # replayed too late
        (KEY, BODY, T - 301),  # from the future
    ],
)
def test_verify_rejects(key: bytes, body: bytes, now: float) -> None:
    assert not verify(key, sign(KEY, T, BODY), body, now=now)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={T}",
        "v1=" + "0" * 64,
        f"t=abc,v1={'0' * 64}",
        f"t=-{T},v1={'0' * 64}",
        f"t=\uff11\uff12,v1={'0' * 64}",  # non-ASCII (fullwidth) digits
        f"t={T},t={T},v1={'0' * 64}",
        f"t={T},v1=é",
        "t=1," + "v1=x," * 2000,
    ],
)
def test_verify_rejects_malformed_headers_without_raising(header: str) -> None:
    assert not verify(KEY, header, BODY, now=T)


def test_verify_accepts_any_of_several_signatures_and_ignores_unknown_schemes() -> None:
    good = sign(KEY, T, BODY).split(",")[1]
    header = f"t={T},v0=legacy,v1={'0' * 64},{good}"
    assert verify(KEY, header, BODY, now=T)
    assert verify(KEY, header.replace(",", ", "), BODY, now=T)


def test_envelope_and_headers() -> None:
    body = encode_envelope("on_play", "evt_x", 0.5, {"stream": "cam1", "n": 1})
    assert json.loads(body) == {
        "event": "on_play",
        "id": "evt_x",
        "time": "1970-01-01T00:00:00.500Z",
        "data": {"stream": "cam1", "n": 1},
    }
    headers = request_headers(KEY, event="on_play", event_id="evt_x", timestamp=T, body=body)
    assert headers["Ripplecast-Event"] == "on_play"
    assert headers["Ripplecast-Delivery"] == "evt_x"
    assert verify(KEY, headers["Ripplecast-Signature"], body, now=T)
    assert iso_time(T) == "2023-11-14T22:13:20.000Z"
    with pytest.raises(ValueError, match="JSON"):
        encode_envelope("on_play", "evt_x", 0, {"x": float("nan")})
    with pytest.raises(TypeError):
        encode_envelope("on_play", "evt_x", 0, {"x": object()})


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/rc?token=abc", None),
        ("http://203.0.113.9:8080/", "not public"),  # TEST-NET-3 is documentation space
        ("http://8.8.8.8/", None),
        ("http://[2001:4860:4860::8888]/", None),
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com:99999/", "malformed"),
        ("https://exa mple.com/", "printable"),
        ("https://example.com/" + "a" * 2048, "longer"),
        ("http://localhost:8000/", "localhost"),
        ("http://LOCALHOST./", "localhost"),
        ("http://app.localhost/", "localhost"),
        ("http://127.0.0.1/", "not public"),
        ("http://10.1.2.3/", "not public"),
        ("http://192.168.0.1/", "not public"),
        ("http://169.254.169.254/latest/meta-data/", "not public"),
        ("http://[::1]/", "not public"),
        ("http://[::ffff:127.0.0.1]/", "not public"),
        ("http://[fd00::1]/", "not public"),
        ("http://0.0.0.0/", "not public"),
        ("http://224.0.0.1/", "not public"),
    ],
)
def test_check_url(url: str, problem: str | None) -> None:
    found = check_url(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_check_url_allows_private_addresses_when_told() -> None:
    assert check_url("http://127.0.0.1:9000/hook", allow_private=True) is None
    assert check_url("http://localhost/hook", allow_private=True) is None
    assert check_url("ftp://127.0.0.1/", allow_private=True) is not None
    assert require_url("https://example.com/") == "https://example.com/"
    with pytest.raises(WebhookURLError) as info:
        require_url("http://10.0.0.1/secret-path?token=t")
    assert "secret-path" not in str(info.value) and "token" not in str(info.value)


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    assert redact_url("https://u:p@Example.com:8443/a/b?token=x#f") == "https://example.com:8443"
    assert redact_url("http://[::1]:80/x") == "http://[::1]:80"
    assert redact_url("http://h:notaport/") == "<malformed URL>"


@pytest.mark.parametrize(
    ("address", "public"),
    [("8.8.8.8", True), ("127.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False)],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


class FakeResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_public_address_resolver_keeps_public_addresses_only() -> None:
    inner = FakeResolver("10.0.0.1", "93.184.215.14")
    resolver = PublicAddressResolver(inner)
    assert [r["host"] for r in await resolver.resolve("mixed.test", 80)] == ["93.184.215.14"]
    with pytest.raises(BlockedAddress):
        await PublicAddressResolver(FakeResolver("127.0.0.1", "::1")).resolve("lo.test", 80)
    await resolver.close()
    assert inner.closed


def test_backoff_is_exponential_capped_and_jittered() -> None:
    low, high = (lambda: 0.0), (lambda: 1.0)
    assert [backoff_delay(n, base=1, cap=100, rand=high) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [backoff_delay(n, base=1, cap=100, rand=low) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 4]
    assert backoff_delay(20, base=1, cap=30, rand=high) == 30
    assert backoff_delay(10_000, base=1, cap=30, rand=high) == 30  # no overflow
    assert backoff_delay(1, base=1, cap=30, retry_after=12, rand=low) == 12
    assert backoff_delay(1, base=1, cap=30, retry_after=3600, rand=low) == 30


@pytest.mark.parametrize(
    ("name", "valid"),
    [("on_publish", True), ("video.ready", True), ("", False), ("On", False), ("a b", False)],
)
def test_event_names(name: str, valid: bool) -> None:
    assert bool(EVENT_NAME.match(name)) is valid
