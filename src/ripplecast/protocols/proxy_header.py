"""Who the client really is behind a load balancer.

`TrustedProxies` says whose X-Forwarded-For header (or PROXY header) is believed. The PROXY
protocol header (versions 1 and 2) is what a balancer (HAProxy `send-proxy` or `send-proxy-v2`)
puts before a TCP connection's own bytes, saying who the client is.

Sans-I/O: `parse_proxy_header(buffer)` looks at the bytes received so far and answers
`NEED_MORE`, or the parsed header and how many bytes it took. Only addresses are read; TLVs of
version 2 are skipped. Anything else is a `ProtocolError` naming what is wrong, so a connection
that should have started with a header and did not is refused with a precise message.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from ripplecast.errors import ProtocolError

__all__ = ["MAX_HEADER_BYTES", "NEED_MORE", "ProxyHeader", "TrustedProxies", "parse_proxy_header"]

V1_PREFIX: Final = b"PROXY "
V1_MAX_BYTES: Final = 107
"""The longest version 1 line, CRLF included (the specification's bound)."""
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES: Final = 16
MAX_HEADER_BYTES: Final = V2_FIXED_BYTES + 1024
"""Longest version 2 header accepted (addresses and TLVs); longer ones are refused."""


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = _NeedMore()
"""The buffer holds the start of a header, not all of it yet."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the balancer said about the connection."""

    client_ip: str
    """The client's address; empty when the balancer did not say (LOCAL, UNKNOWN, UNIX)."""
    client_port: int
    length: int
    """Bytes of the buffer the header took."""


def parse_proxy_header(buffer: bytes) -> ProxyHeader | _NeedMore:
    """Parse the PROXY header at the start of `buffer` (see the module docstring)."""
    if buffer.startswith(V2_SIGNATURE):
        return _parse_v2(buffer)
    if buffer.startswith(V1_PREFIX):
        return _parse_v1(buffer)
    if V2_SIGNATURE.startswith(buffer) or V1_PREFIX.startswith(buffer):
        return NEED_MORE  # the start of one or the other
    raise ProtocolError("the connection did not start with a PROXY protocol header")


def _parse_v1(buffer: bytes) -> ProxyHeader | _NeedMore:
    end = buffer.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(buffer) >= V1_MAX_BYTES:
            raise ProtocolError(f"PROXY v1 header longer than {V1_MAX_BYTES} bytes")
        return NEED_MORE
    words = buffer[:end].decode("ascii", "replace").split(" ")
    length = end + 2
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader("", 0, length)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProtocolError(f"malformed PROXY v1 header {buffer[:end][:80]!r}")
    try:
        address = ipaddress.ip_address(words[2])
        port = int(words[4])
    except ValueError:
        raise ProtocolError(f"malformed PROXY v1 header {buffer[:end][:80]!r}") from None
    if (address.version == 4) != (words[1] == "TCP4") or not 0 <= port <= 65535:
        raise ProtocolError(f"malformed PROXY v1 header {buffer[:end][:80]!r}")
    return ProxyHeader(str(address), port, length)


def _parse_v2(buffer: bytes) -> ProxyHeader | _NeedMore:
    if len(buffer) < V2_FIXED_BYTES:
        return NEED_MORE
    version, command = buffer[12] >> 4, buffer[12] & 0x0F
    if version != 2 or command > 1:
        raise ProtocolError(f"PROXY v2 header with version {version} command {command}")
    body = int.from_bytes(buffer[14:16], "big")
    length = V2_FIXED_BYTES + body
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"PROXY v2 header of {length} bytes > {MAX_HEADER_BYTES}")
    if len(buffer) < length:
        return NEED_MORE
    family = buffer[13] >> 4
    addresses = buffer[V2_FIXED_BYTES:length]
    if command == 0 or family not in (1, 2):  # LOCAL (health check), or UNSPEC/UNIX
        return ProxyHeader("", 0, length)
    size = 4 if family == 1 else 16
    if len(addresses) < 2 * size + 4:
        raise ProtocolError("PROXY v2 header too short for its address family")
    ip = ipaddress.ip_address(addresses[:size])
    port = int.from_bytes(addresses[2 * size : 2 * size + 2], "big")
    return ProxyHeader(str(ip), port, length)


class TrustedProxies:
    """The load balancers whose word about the client's address is taken (`trusted_proxies`).

    Raises `ValueError` at construction for an entry that is not an address or a network.
    """

    def __init__(self, networks: list[str]) -> None:
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in networks]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, ip: str) -> bool:
        """True if `ip` is one of the trusted proxies."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client's address for a request from `peer` carrying `X-Forwarded-For`: the
        right-most address in it that is not a trusted proxy, when `peer` is trusted; `peer`
        itself otherwise (an untrusted peer's header is ignored: anyone can write one)."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        for entry in reversed(forwarded_for.split(",")[-16:]):
            candidate = entry.strip()
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                return peer  # a malformed list: trust nothing in it
            if not self.trusts(candidate):
                return candidate
        return peer
