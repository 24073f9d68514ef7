"""The PROXY protocol header parser (v1 text, v2 binary) and the trusted-proxy rules."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripplecast.errors import ProtocolError
from ripplecast.protocols.proxy_header import (
    MAX_HEADER_BYTES,
    NEED_MORE,
    V2_SIGNATURE,
    ProxyHeader,
    TrustedProxies,
    parse_proxy_header,
)

RTMP_C0 = b"\x03" + b"\x00" * 64


def v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    addresses = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack(">HH", sport, dport)
    )
    return v2(1, 0x11, addresses, tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    addresses = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack(">HH", sport, dport)
    )
    return v2(1, 0x21, addresses)


CASES = [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 1935\r\n", ProxyHeader("192.0.2.7", 51234, 42)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1935\r\n", ProxyHeader("2001:db8::7", 4000, 46)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader("", 0, 15)),
    (v2_tcp4("198.51.100.9", "10.0.0.1", 40000, 1935), ProxyHeader("198.51.100.9", 40000, 28)),
    (
        v2_tcp4("198.51.100.9", "10.0.0.1", 40000, 1935, tlvs=b"\x04\x00\x02hi"),
        ProxyHeader("198.51.100.9", 40000, 33),
    ),
    (v2_tcp6("2001:db8::9", "2001:db8::1", 5, 1935), ProxyHeader("2001:db8::9", 5, 52)),
    (v2(0, 0x00, b""), ProxyHeader("", 0, 16)),  # LOCAL: HAProxy's own health check
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_headers_parse_and_every_prefix_asks_for_more(header: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(header + RTMP_C0) == expected
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is NEED_MORE, cut


@pytest.mark.parametrize(
    "bad",
    [
        b"PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 70000 2\r\n",
        b"PROXY TCP4 192.0.2.1\r\n",
        b"PROXY SCTP 192.0.2.1 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 " + b"1" * 120,
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # too short for IPv4
        V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", MAX_HEADER_BYTES),
        b"GET / HTTP/1.1\r\n",
        RTMP_C0,
    ],
)
def test_malformed_headers_are_refused_with_a_message(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_proxy_header(bad)


@given(st.binary(max_size=300))
def test_any_bytes_parse_ask_for_more_or_are_refused(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProtocolError:
        return
    assert result is NEED_MORE or (
        isinstance(result, ProxyHeader) and 0 < result.length <= len(data)
    )


def test_trusted_proxies_decide_whose_forwarded_for_counts() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.trusts("127.0.0.1") and proxies.trusts("10.1.2.3")
    assert proxies.trusts("::ffff:10.1.2.3")  # an IPv4 peer on a dual-stack socket
    assert not proxies.trusts("192.0.2.1") and not proxies.trusts("not an address")
    # From a trusted proxy: the right-most address that is not a proxy.
    assert proxies.client("127.0.0.1", "192.0.2.7") == "192.0.2.7"
    assert proxies.client("127.0.0.1", "6.6.6.6, 192.0.2.7, 10.0.0.5") == "192.0.2.7"
    # A client can prepend anything: only what the proxies appended counts.
    assert proxies.client("10.0.0.5", "127.0.0.1, 192.0.2.7") == "192.0.2.7"
    # From anyone else the header is ignored; a malformed list is not trusted.
    assert proxies.client("192.0.2.9", "127.0.0.1") == "192.0.2.9"
    assert proxies.client("127.0.0.1", "192.0.2.7, <script>") == "127.0.0.1"
    assert proxies.client("127.0.0.1", "") == "127.0.0.1"
    assert not TrustedProxies([])
    with pytest.raises(ValueError, match="does not appear"):
        TrustedProxies(["no.such.network"])
