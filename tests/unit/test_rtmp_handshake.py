"""RTMP handshake: simple and digest handshakes in memory, any split, garbage, real clients."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import shutil
from collections.abc import Callable

import pytest

from ripplecast.errors import ProtocolError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import ChunkReader, RtmpMessage
from ripplecast.protocols.rtmp.handshake import (
    HANDSHAKE_SIZE,
    ClientHandshake,
    ServerHandshake,
)

# Written out here rather than imported so the test checks the module's constants.
KEY_TAIL = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E,
        0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB,
        0x31, 0xAE,
    ]
)  # fmt: skip
FP_KEY = b"Genuine Adobe Flash Player 001" + KEY_TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + KEY_TAIL


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def sha(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def offset_of(packet: bytes, scheme: int) -> int:
    if scheme == 0:
        return (packet[8] + packet[9] + packet[10] + packet[11]) % 728 + 12
    return (packet[772] + packet[773] + packet[774] + packet[775]) % 728 + 776


def flash_c1(scheme: int, seed: int = 1) -> tuple[bytes, bytes]:
    """Build a C1 the way Flash Player / librtmp / ffmpeg do; return (c1, its digest)."""
    body = bytearray(
        b"\x00\x00\x01\x00" + bytes([9, 0, 124, 2]) + random.Random(seed).randbytes(1528)
    )
    off = offset_of(bytes(body), scheme)
    digest = sha(FP_KEY[:30], bytes(body[:off] + body[off + 32 :]))
    body[off : off + 32] = digest
    return bytes(body), digest


def simple_c1(seed: int = 2) -> bytes:
    return b"\x00\x00\x00\x07" + b"\x00" * 4 + random.Random(seed).randbytes(1528)


def run_server(data: bytes, *, split: int | None = None) -> ServerHandshake:
    hs = ServerHandshake(timestamp_ms=0x01020304, randbytes=seeded(9))
    if split is None:
        hs.receive_data(data)
    else:
        for i in range(0, len(data), split):
            hs.receive_data(data[i : i + split])
    return hs


# --- simple handshake --------------------------------------------------------------------------


def test_simple_handshake_replies_as_soon_as_c0c1_is_in() -> None:
    c1 = simple_c1()
    hs = ServerHandshake(timestamp_ms=0x01020304, randbytes=seeded(3))
    hs.receive_data(b"\x03" + c1[:-1])
    assert hs.data_to_send() == b""
    hs.receive_data(c1[-1:])
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert out[0] == 3
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[:4] == b"\x01\x02\x03\x04"
    assert s1[4:8] == b"\x00\x00\x00\x00"
    assert s2 == c1  # exact echo: librtmp warns when S2 differs from its C1
    assert hs.digest_scheme is None
    assert not hs.complete
    assert hs.data_to_send() == b""
    hs.receive_data(bytes(HANDSHAKE_SIZE))  # C2 content is not checked
    assert hs.complete
    assert hs.leftover() == b""


@pytest.mark.parametrize("split", [None, 1, 7, 1000])
def test_any_split_with_trailing_bytes(split: int | None) -> None:
    trailing = b"\x03first chunk bytes"
    data = b"\x03" + simple_c1() + bytes(range(256)) * 6 + trailing
    hs = run_server(data, split=split)
    assert hs.complete
    assert len(hs.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE
    assert hs.leftover() == trailing
    assert hs.leftover() == b""  # drained
    hs.receive_data(b"more")
    assert hs.leftover() == b"more"


def test_random_splits_give_the_same_output() -> None:
    c1, _ = flash_c1(0)
    data = b"\x03" + c1 + bytes(HANDSHAKE_SIZE) + b"tail"
    whole = run_server(data)
    expected = whole.data_to_send()
    rng = random.Random(5)
    for _ in range(20):
        hs = ServerHandshake(timestamp_ms=0x01020304, randbytes=seeded(9))
        i = 0
        out = b""
        while i < len(data):
            n = rng.randint(1, 900)
            hs.receive_data(data[i : i + n])
            out += hs.data_to_send()
            i += n
        assert out == expected
        assert hs.leftover() == b"tail"


# --- digest handshake --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [0, 1])
def test_digest_handshake_known_answer(scheme: int) -> None:
    c1, client_digest = flash_c1(scheme, seed=scheme + 10)
    hs = run_server(b"\x03" + c1)
    assert hs.digest_scheme == scheme
    out = hs.data_to_send()
    assert out[0] == 3
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[:4] == b"\x01\x02\x03\x04"
    assert s1[4:8] == b"\x04\x05\x00\x01"
    # The client checks S1's digest at the same scheme's offset, keyed with the FMS text...
    off = offset_of(s1, scheme)
    assert s1[off : off + 32] == sha(FMS_KEY[:36], s1[:off] + s1[off + 32 :])
    # ... and S2's signature, keyed with HMAC(full FMS key, its own digest).
    assert s2[-32:] == sha(sha(FMS_KEY, client_digest), s2[:-32])


def test_c1_with_version_but_no_valid_digest_gets_the_simple_reply() -> None:
    c1 = bytearray(flash_c1(0)[0])
    c1[100] ^= 0xFF  # breaks any digest
    c1[900] ^= 0xFF
    hs = run_server(b"\x03" + bytes(c1))
    out = hs.data_to_send()
    assert hs.digest_scheme is None
    assert out[1 + HANDSHAKE_SIZE :] == bytes(c1)


# --- bad first bytes ---------------------------------------------------------------------------


def test_http_on_the_rtmp_port_is_named() -> None:
    hs = ServerHandshake()
    with pytest.raises(ProtocolError, match=r"not an RTMP client: first byte 0x47") as info:
        hs.receive_data(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    assert info.value.reason == "handshake"


def test_bad_version_detected_on_the_first_byte() -> None:
    hs = ServerHandshake()
    with pytest.raises(ProtocolError, match="first byte 0x16"):
        hs.receive_data(b"\x16")  # a TLS ClientHello


@pytest.mark.parametrize("version", [6, 8, 9])
def test_rtmpe_is_refused_clearly(version: int) -> None:
    hs = ServerHandshake()
    with pytest.raises(ProtocolError, match=rf"unsupported RTMP version 0x0{version} \(RTMPE"):
        hs.receive_data(bytes([version]) + bytes(1536))


# --- our client --------------------------------------------------------------------------------


def test_client_and_server_in_memory() -> None:
    client = ClientHandshake(timestamp_ms=77, randbytes=seeded(1))
    server = ServerHandshake(timestamp_ms=88, randbytes=seeded(2))
    c0c1 = client.initial_bytes()
    assert c0c1[0] == 3
    assert len(c0c1) == 1 + HANDSHAKE_SIZE
    assert c0c1[1:9] == b"\x00\x00\x00\x4d\x00\x00\x00\x00"
    server.receive_data(c0c1)
    s0s1s2 = server.data_to_send()
    assert server.digest_scheme is None
    assert s0s1s2[1 + HANDSHAKE_SIZE :] == client.c1
    client.receive_data(s0s1s2 + b"server chunk")
    assert client.complete
    c2 = client.data_to_send()
    assert c2 == s0s1s2[1 : 1 + HANDSHAKE_SIZE]  # echo of S1
    assert client.leftover() == b"server chunk"
    server.receive_data(c2 + b"client chunk")
    assert server.complete
    assert server.leftover() == b"client chunk"


def test_client_sends_c2_once_s1_is_in_byte_by_byte() -> None:
    client = ClientHandshake(randbytes=seeded(1))
    server = ServerHandshake(randbytes=seeded(2))
    server.receive_data(client.initial_bytes())
    reply = server.data_to_send()
    sent = b""
    for i in range(len(reply)):
        client.receive_data(reply[i : i + 1])
        sent += client.data_to_send()
        assert client.complete == (i == len(reply) - 1)
        assert len(sent) == (HANDSHAKE_SIZE if i >= HANDSHAKE_SIZE else 0)


def test_client_rejects_bad_s0() -> None:
    client = ClientHandshake()
    with pytest.raises(ProtocolError, match="S0"):
        client.receive_data(b"HTTP/1.1 400 Bad Request\r\n")


# --- real clients ------------------------------------------------------------------------------

HANDSHAKE_COMPLAINTS = ("handshake", "digest", "genuine", "signature", "validating")
PROTOCOL_CONTROL = {
    chunk.ABORT,
    chunk.ACK,
    chunk.USER_CONTROL,
    chunk.WINDOW_ACK_SIZE,
    chunk.SET_PEER_BANDWIDTH,
}


class OneConnectionServer:
    """Accepts one connection, runs the handshake, then reads up to the first command."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.digest_scheme: int | None = None
        self.first: RtmpMessage | None = None
        self.error: BaseException | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.done.is_set():
            writer.close()
            return
        try:
            hs = ServerHandshake(timestamp_ms=1000)
            while not hs.complete:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("client closed during the handshake")
                hs.receive_data(data)
                out = hs.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
            self.digest_scheme = hs.digest_scheme
            chunks = ChunkReader()
            chunks.receive_data(hs.leftover())
            while self.first is None:
                message = chunks.next_message()
                if message is None:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("client closed before sending a command")
                    chunks.receive_data(data)
                elif message.type_id == chunk.SET_CHUNK_SIZE:
                    chunks.set_chunk_size(chunk.parse_u32(message.payload))
                elif message.type_id not in PROTOCOL_CONTROL:
                    self.first = message
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()
            writer.close()


async def drive(argv_for_port: Callable[[int], list[str]]) -> tuple[OneConnectionServer, str]:
    server = OneConnectionServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *argv_for_port(port),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(server.done.wait(), timeout=15)
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=5)
        except TimeoutError:
            proc.kill()
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        listener.close()
        await listener.wait_closed()
    return server, stderr.decode(errors="replace")


def assert_connected(server: OneConnectionServer, stderr: str) -> None:
    assert server.error is None, f"{server.error!r}; client said: {stderr}"
    assert server.first is not None
    assert server.first.type_id == chunk.COMMAND_AMF0
    assert server.first.payload.startswith(b"\x02\x00\x07connect")
    lowered = stderr.lower()
    for word in HANDSHAKE_COMPLAINTS:
        assert word not in lowered, stderr


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
needs_rtmpdump = pytest.mark.skipif(
    shutil.which("rtmpdump") is None, reason="rtmpdump not installed"
)


@pytest.mark.ffmpeg
@needs_ffmpeg
async def test_ffmpeg_publisher_handshake() -> None:
    server, stderr = await drive(
        lambda port: [
            "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc", "-t", "1",
            "-rw_timeout", "3000000", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/test",
        ]
    )  # fmt: skip
    assert_connected(server, stderr)
    assert server.digest_scheme == 0  # ffmpeg always sends a digest C1


@pytest.mark.ffmpeg
@needs_ffmpeg
async def test_ffmpeg_player_verifies_our_digest_and_signature() -> None:
    # When playing, ffmpeg checks S1's digest and S2's signature ("Server response validating
    # failed" / "Signature mismatch") before it sends C2 and connect.
    server, stderr = await drive(
        lambda port: [
            "ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", "3000000",
            "-i", f"rtmp://127.0.0.1:{port}/live/test", "-t", "1", "-f", "null", "-",
        ]
    )  # fmt: skip
    assert_connected(server, stderr)
    assert server.digest_scheme == 0


@needs_rtmpdump
async def test_rtmpdump_simple_handshake() -> None:
    server, stderr = await drive(
        lambda port: ["rtmpdump", "-r", f"rtmp://127.0.0.1:{port}/live/test", "-o", "/dev/null",
                      "-m", "3"]
    )  # fmt: skip
    assert_connected(server, stderr)
    assert server.digest_scheme is None


@needs_rtmpdump
async def test_rtmpdump_digest_handshake_verifies_the_server() -> None:
    # With a SWF hash/size librtmp does the FP9 handshake and checks S1's digest ("Couldn't
    # verify the server digest") and S2 ("Server not genuine Adobe!").
    server, stderr = await drive(
        lambda port: ["rtmpdump", "-r", f"rtmp://127.0.0.1:{port}/live/test", "-o", "/dev/null",
                      "-m", "3", "-w", "ab" * 32, "-x", "12345"]
    )  # fmt: skip
    assert_connected(server, stderr)
    assert server.digest_scheme == 0
