"""RTMP handshake, sans-I/O: the C0/C1/C2 and S0/S1/S2 exchange that precedes the chunk stream.

Owns: the server side (`ServerHandshake`, simple and Flash-style digest handshake) and a simple
client side (`ClientHandshake`) for our own pulls and load generators. Nothing here touches a
socket or a clock: bytes come in through `receive_data`, bytes to write come out of
`data_to_send`, the timestamp is a constructor argument and random bytes come from an injected
`randbytes` callable.

Invariants:
- Every packet after the version byte is exactly `HANDSHAKE_SIZE` (1536) bytes.
- The server answers S0S1S2 as soon as C0C1 is in (clients wait for S2 before sending C2) and
  completes once C2 is in; C2 is not validated (many clients send garbage there).
- Bytes that arrive after the last handshake packet are never parsed here; `leftover()` hands
  them to the chunk reader (ffmpeg sends its first chunk in the same segment as C2).
- A first byte other than 3 raises `ProtocolError(reason="handshake")` at once, so a browser or
  scanner talking HTTP to the RTMP port is named clearly.

Digest handshake (as Flash Player, librtmp and ffmpeg send it): C1 carries a 32-byte
HMAC-SHA256 digest at an offset derived from four bytes of C1 (scheme 0: bytes 8..11, scheme 1:
bytes 772..775), keyed with the first 30 bytes of `GENUINE_FP_KEY`. When found, S1 carries our
digest placed by the same scheme and keyed with the first 36 bytes of `GENUINE_FMS_KEY`, and S2
ends with HMAC-SHA256(HMAC-SHA256(GENUINE_FMS_KEY, client digest), S2[:1504]); librtmp and
ffmpeg (when playing) check both. The constants match librtmp, ffmpeg's rtmpproto.c and SRS.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from ripplecast.errors import ProtocolError, UsageError

__all__ = [
    "GENUINE_FMS_KEY",
    "GENUINE_FP_KEY",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "SERVER_VERSION",
    "ClientHandshake",
    "ServerHandshake",
    "digest_offset",
    "find_client_digest",
]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
"""62 bytes; the first 30 (the text) key the client's C1 digest."""
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
"""68 bytes; the first 36 (the text) key S1's digest, all 68 key the S2 signature."""

SERVER_VERSION = 0x04050001
"""Written in S1 bytes 4..7 for a digest handshake (FMS-style; librtmp and ffmpeg expect >= 3)."""

_RTMPE_VERSIONS = frozenset({6, 8, 9})


def _hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def digest_offset(packet: bytes | bytearray, scheme: int) -> int:
    """Return where the 32-byte digest sits in a 1536-byte C1/S1 for `scheme` 0 or 1."""
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def _digest_at(packet: bytes, offset: int, key: bytes) -> bytes:
    return _hmac_sha256(key, packet[:offset] + packet[offset + DIGEST_SIZE :])


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """Return `(scheme, digest)` if C1 carries a valid Flash Player digest, else None.

    Scheme 0 is tried first (what librtmp and ffmpeg send), then scheme 1.
    """
    if len(c1) != HANDSHAKE_SIZE or c1[4:8] == b"\x00\x00\x00\x00":
        return None
    key = GENUINE_FP_KEY[:30]
    for scheme in (0, 1):
        offset = digest_offset(c1, scheme)
        digest = c1[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(digest, _digest_at(c1, offset, key)):
            return scheme, digest
    return None


def _check_version(byte: int) -> None:
    if byte == RTMP_VERSION:
        return
    if byte in _RTMPE_VERSIONS:
        raise ProtocolError(
            f"unsupported RTMP version 0x{byte:02x} (RTMPE is not supported)", reason="handshake"
        )
    raise ProtocolError(f"not an RTMP client: first byte 0x{byte:02x}", reason="handshake")


class ServerHandshake:
    """Server side of the handshake; feed it bytes, write what `data_to_send()` returns.

    `receive_data` parses as soon as enough bytes are in and raises `ProtocolError` on a bad
    version byte. `timestamp_ms` goes into S1's time field; `randbytes(n)` supplies S1/S2
    randomness.
    """

    def __init__(
        self,
        *,
        timestamp_ms: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._timestamp = timestamp_ms & 0xFFFFFFFF
        self._randbytes = randbytes
        self._buf = bytearray()
        self._out = bytearray()
        self._replied = False
        self._complete = False
        self._leftover = bytearray()
        self.digest_scheme: int | None = None
        """Digest scheme (0 or 1) found in C1, or None for a simple handshake / not yet known."""

    @property
    def complete(self) -> bool:
        """True once C0, C1 and C2 are all in (S0S1S2 has been queued by then)."""
        return self._complete

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client; raises ProtocolError on an unsupported version byte."""
        if self._complete:
            self._leftover += data
            return
        self._buf += data
        if not self._buf:
            return
        _check_version(self._buf[0])
        if not self._replied and len(self._buf) >= 1 + HANDSHAKE_SIZE:
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            self._out += self._reply(c1)
            self._replied = True
        total = 1 + 2 * HANDSHAKE_SIZE
        if self._replied and len(self._buf) >= total:
            self._leftover += self._buf[total:]
            self._buf = bytearray()
            self._complete = True

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes to write to the client now; b"" when none."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def leftover(self) -> bytes:
        """Return (and forget) bytes received after C2: the start of the chunk stream."""
        out = bytes(self._leftover)
        self._leftover.clear()
        return out

    def _reply(self, c1: bytes) -> bytes:
        found = find_client_digest(c1)
        time = self._timestamp.to_bytes(4, "big")
        if found is None:
            # Simple handshake: S2 echoes C1 byte for byte (as nginx-rtmp does); librtmp warns
            # "client signature does not match!" when it differs.
            s1 = time + b"\x00\x00\x00\x00" + self._random(HANDSHAKE_SIZE - 8)
            return bytes([RTMP_VERSION]) + s1 + c1
        scheme, client_digest = found
        self.digest_scheme = scheme
        s1_digest = bytearray(
            time + SERVER_VERSION.to_bytes(4, "big") + self._random(HANDSHAKE_SIZE - 8)
        )
        offset = digest_offset(s1_digest, scheme)
        s1_digest[offset : offset + DIGEST_SIZE] = _digest_at(
            bytes(s1_digest), offset, GENUINE_FMS_KEY[:36]
        )
        s2 = self._random(HANDSHAKE_SIZE - DIGEST_SIZE)
        key = _hmac_sha256(GENUINE_FMS_KEY, client_digest)
        return bytes([RTMP_VERSION]) + bytes(s1_digest) + s2 + _hmac_sha256(key, s2)

    def _random(self, n: int) -> bytes:
        data = self._randbytes(n)
        if len(data) != n:
            raise UsageError(f"randbytes({n}) returned {len(data)} bytes")
        return data


class ClientHandshake:
    """Client side, simple handshake (C1 with a zero version field): for our own pulls.

    Write `initial_bytes()` (C0C1) first, then feed the server's bytes; C2 (an exact echo of
    S1) is queued in `data_to_send()` as soon as S1 is in. Raises ProtocolError if S0 is not 3.
    """

    def __init__(
        self,
        *,
        timestamp_ms: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        c1_random = randbytes(HANDSHAKE_SIZE - 8)
        if len(c1_random) != HANDSHAKE_SIZE - 8:
            raise UsageError("randbytes returned the wrong number of bytes")
        self._c1 = (timestamp_ms & 0xFFFFFFFF).to_bytes(4, "big") + b"\x00" * 4 + c1_random
        self._buf = bytearray()
        self._out = bytearray()
        self._sent_c2 = False
        self._complete = False
        self._leftover = bytearray()

    @property
    def c1(self) -> bytes:
        """The C1 packet this client sends (the server's S2 should echo it)."""
        return self._c1

    @property
    def complete(self) -> bool:
        """True once S0, S1 and S2 are all in (C2 has been queued by then)."""
        return self._complete

    def initial_bytes(self) -> bytes:
        """Return C0C1, to be written as soon as the connection is up."""
        return bytes([RTMP_VERSION]) + self._c1

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server; raises ProtocolError if S0 is not version 3."""
        if self._complete:
            self._leftover += data
            return
        self._buf += data
        if not self._buf:
            return
        if self._buf[0] != RTMP_VERSION:
            raise ProtocolError(
                f"not an RTMP server: S0 version byte 0x{self._buf[0]:02x}", reason="handshake"
            )
        if not self._sent_c2 and len(self._buf) >= 1 + HANDSHAKE_SIZE:
            self._out += self._buf[1 : 1 + HANDSHAKE_SIZE]
            self._sent_c2 = True
        total = 1 + 2 * HANDSHAKE_SIZE
        if len(self._buf) >= total:
            self._leftover += self._buf[total:]
            self._buf = bytearray()
            self._complete = True

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes to write to the server now; b"" when none."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def leftover(self) -> bytes:
        """Return (and forget) bytes received after S2: the start of the chunk stream."""
        out = bytes(self._leftover)
        self._leftover.clear()
        return out
