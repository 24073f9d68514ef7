"""AMF0: exact encodings, round trips, limits and every truncation."""

from __future__ import annotations

import struct

import pytest

from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.media.amf0 import (
    UNDEFINED,
    Amf0Error,
    AmfDate,
    AmfValue,
    EcmaArray,
    Undefined,
    decode_value,
    decode_values,
    encode_value,
    encode_values,
)


def _s(text: str) -> bytes:
    """A UTF-8 string body as used for object keys (no marker)."""
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _num(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


def _str(text: str) -> bytes:
    return b"\x02" + _s(text)


END = b"\x00\x00\x09"


# ------------------------------------------------------------------------------ exact encodings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        (1, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        (-2.5, b"\x00" + struct.pack(">d", -2.5)),
        (True, b"\x01\x01"),
        (False, b"\x01\x00"),
        ("", b"\x02\x00\x00"),
        ("live", b"\x02\x00\x04live"),
        ("é", b"\x02\x00\x02\xc3\xa9"),
        (None, b"\x05"),
        (UNDEFINED, b"\x06"),
        ({}, b"\x03" + END),
        ({"a": 1.0}, b"\x03" + _s("a") + _num(1.0) + END),
        (EcmaArray(), b"\x08\x00\x00\x00\x00" + END),
        (EcmaArray(w=320), b"\x08\x00\x00\x00\x01" + _s("w") + _num(320.0) + END),
        ([], b"\x0a\x00\x00\x00\x00"),
        ([None, True], b"\x0a\x00\x00\x00\x02\x05\x01\x01"),
        (AmfDate(1000.0, 0), b"\x0b" + struct.pack(">d", 1000.0) + b"\x00\x00"),
        (AmfDate(0.0, -60), b"\x0b" + struct.pack(">d", 0.0) + b"\xff\xc4"),
    ],
)
def test_known_encodings(value: AmfValue, expected: bytes) -> None:
    assert encode_value(value) == expected
    assert decode_values(expected) == [value]


def test_bool_is_not_encoded_as_number() -> None:
    assert encode_value(True)[0] == 0x01
    assert decode_values(encode_value(True)) == [True]
    assert type(decode_values(encode_value(True))[0]) is bool


def test_numbers_decode_as_float() -> None:
    (value,) = decode_values(encode_value(3))
    assert type(value) is float
    assert value == 3.0


def test_long_string_switches_at_65536_bytes() -> None:
    short = "x" * 0xFFFF
    long = "x" * 0x10000
    assert encode_value(short)[:3] == b"\x02\xff\xff"
    assert encode_value(long)[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode_values(encode_value(short)) == [short]
    assert decode_values(encode_value(long)) == [long]
    # Multi-byte characters count in UTF-8 bytes, not characters.
    wide = "é" * 0x8000
    assert encode_value(wide)[0] == 0x0C
    assert decode_values(encode_value(wide)) == [wide]


def test_connect_command_as_ffmpeg_sends_it() -> None:
    command_object: dict[str, AmfValue] = {
        "app": "live",
        "flashVer": "FMLE/3.0 (compatible; Lavf61.7.100)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
        "fpad": False,
        "capabilities": 15.0,
        "audioCodecs": 4071.0,
        "videoCodecs": 252.0,
        "videoFunction": 1.0,
        "type": "nonprivate",
    }
    body = encode_values("connect", 1.0, command_object)
    expected = (
        _str("connect")
        + _num(1.0)
        + b"\x03"
        + _s("app")
        + _str("live")
        + _s("flashVer")
        + _str("FMLE/3.0 (compatible; Lavf61.7.100)")
        + _s("tcUrl")
        + _str("rtmp://127.0.0.1:1935/live")
        + _s("fpad")
        + b"\x01\x00"
        + _s("capabilities")
        + _num(15.0)
        + _s("audioCodecs")
        + _num(4071.0)
        + _s("videoCodecs")
        + _num(252.0)
        + _s("videoFunction")
        + _num(1.0)
        + _s("type")
        + _str("nonprivate")
        + END
    )
    assert body == expected
    name, txn, obj = decode_values(body)
    assert name == "connect"
    assert txn == 1.0
    assert obj == command_object
    assert isinstance(obj, dict)
    assert list(obj) == list(command_object)  # key order survives


def test_on_metadata_as_ffmpeg_sends_it() -> None:
    # "@setDataFrame", "onMetaData", ECMA array: the shape of ffmpeg's flvenc/rtmp output.
    pairs: list[tuple[str, bytes]] = [
        ("duration", _num(0.0)),
        ("width", _num(320.0)),
        ("height", _num(240.0)),
        ("videodatarate", _num(0.0)),
        ("framerate", _num(25.0)),
        ("videocodecid", _num(7.0)),
        ("audiodatarate", _num(0.0)),
        ("audiosamplerate", _num(44100.0)),
        ("audiosamplesize", _num(16.0)),
        ("stereo", b"\x01\x00"),
        ("audiocodecid", _num(10.0)),
        ("encoder", _str("Lavf61.7.100")),
        ("filesize", _num(0.0)),
    ]
    body = (
        _str("@setDataFrame")
        + _str("onMetaData")
        + b"\x08"
        + struct.pack(">I", len(pairs))
        + b"".join(_s(key) + value for key, value in pairs)
        + END
    )
    marker, name, metadata = decode_values(body)
    assert (marker, name) == ("@setDataFrame", "onMetaData")
    assert isinstance(metadata, EcmaArray)
    assert metadata["width"] == 320.0
    assert metadata["height"] == 240.0
    assert metadata["framerate"] == 25.0
    assert metadata["videocodecid"] == 7.0
    assert metadata["audiocodecid"] == 10.0
    assert metadata["encoder"] == "Lavf61.7.100"
    assert metadata["stereo"] is False
    # Re-encoding keeps the ECMA array marker, so the bytes come back identical.
    assert encode_values(marker, name, metadata) == body


def test_round_trip_of_every_type_nested() -> None:
    value: AmfValue = {
        "n": 1.5,
        "b": True,
        "s": "text",
        "long": "L" * 70000,
        "null": None,
        "undef": UNDEFINED,
        "obj": {"inner": {"deeper": [1.0, "two", None]}},
        "ecma": EcmaArray(a=1.0, b=EcmaArray()),
        "list": [[], [{}], [EcmaArray(x="y")]],
        "date": AmfDate(1_700_000_000_000.0, 0),
        "": "empty key",
    }
    (decoded,) = decode_values(encode_value(value))
    assert decoded == value
    assert isinstance(decoded, dict)
    assert isinstance(decoded["ecma"], EcmaArray)
    assert not isinstance(decoded["obj"], EcmaArray)
    assert encode_value(decoded) == encode_value(value)


def test_undefined_is_a_singleton() -> None:
    assert Undefined() is UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert not UNDEFINED


def test_encode_rejects_unsupported_types() -> None:
    with pytest.raises(TypeError):
        encode_value(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_value(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_value({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="65535"):
        encode_value({"k" * 70000: 1.0})
    with pytest.raises(ValueError, match="too large"):
        encode_value(10**400)
    with pytest.raises(ValueError, match="timezone"):
        encode_value(AmfDate(0.0, 40000))


def test_encode_rejects_circular_structures() -> None:
    loop: dict[str, AmfValue] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="circular"):
        encode_value(loop)
    shared: list[AmfValue] = [1.0]
    # The same object twice (not a cycle) is fine: AMF0 writes it twice.
    assert decode_values(encode_value([shared, shared])) == [[[1.0], [1.0]]]


# ------------------------------------------------------------------------------ decode_value


def test_decode_value_returns_new_offset() -> None:
    body = encode_values("play", 0.0, None, "stream")
    offset = 0
    values = []
    while offset < len(body):
        value, offset = decode_value(body, offset)
        values.append(value)
    assert values == ["play", 0.0, None, "stream"]
    assert offset == len(body)


def test_decode_value_rejects_bad_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        decode_value(b"\x05", 2)
    with pytest.raises(Amf0Error, match="truncated value at offset 1"):
        decode_value(b"\x05", 1)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    body = encode_values("x", {"k": "v"})
    assert decode_values(bytearray(body)) == ["x", {"k": "v"}]  # type: ignore[arg-type]
    assert decode_values(memoryview(body)) == ["x", {"k": "v"}]  # type: ignore[arg-type]


def test_empty_body_decodes_to_no_values() -> None:
    assert decode_values(b"") == []


# ------------------------------------------------------------------------------ other markers


def test_reference_resolves_to_earlier_object() -> None:
    inner = b"\x03" + _s("a") + _num(1.0) + END
    body = b"\x0a\x00\x00\x00\x02" + inner + b"\x07\x00\x01"
    (decoded,) = decode_values(body)
    assert decoded == [{"a": 1.0}, {"a": 1.0}]
    assert isinstance(decoded, list)
    assert decoded[0] is decoded[1]


def test_reference_across_top_level_values() -> None:
    body = encode_value({"a": 1.0}) + b"\x07\x00\x00"
    first, second = decode_values(body)
    assert first is second


def test_reference_to_unknown_or_enclosing_object_is_an_error() -> None:
    with pytest.raises(Amf0Error, match="reference 0"):
        decode_values(b"\x07\x00\x00")
    # An object referring to itself (a cycle) is refused.
    with pytest.raises(Amf0Error, match="reference 0"):
        decode_values(b"\x03" + _s("me") + b"\x07\x00\x00" + END)


def test_typed_object_decodes_as_object() -> None:
    body = b"\x10" + _s("flash.Class") + _s("x") + _num(2.0) + END
    assert decode_values(body) == [{"x": 2.0}]


def test_unsupported_marker_is_undefined() -> None:
    assert decode_values(b"\x0d") == [UNDEFINED]


def test_xml_document_decodes_as_string() -> None:
    assert decode_values(b"\x0f\x00\x00\x00\x03<a>") == ["<a>"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x11\x04\x01", "AMF3 values are not supported"),
        (b"\x04", "reserved AMF0 marker 0x04"),
        (b"\x0e", "reserved AMF0 marker 0x0e"),
        (b"\x09", "object-end marker outside an object"),
        (b"\x12", "unknown AMF0 marker 0x12"),
        (b"\xff", "unknown AMF0 marker 0xff"),
    ],
)
def test_bad_markers(body: bytes, message: str) -> None:
    with pytest.raises(Amf0Error, match=message):
        decode_values(body)


def test_invalid_utf8() -> None:
    with pytest.raises(Amf0Error, match="invalid UTF-8 in string at offset 0"):
        decode_values(b"\x02\x00\x02\xc3\x28")
    with pytest.raises(Amf0Error, match="invalid UTF-8 in object key"):
        decode_values(b"\x03\x00\x01\xff" + _num(1.0) + END)


# ------------------------------------------------------------------------------ ECMA leniency


def test_ecma_count_is_ignored() -> None:
    pairs = _s("a") + _num(1.0) + _s("b") + _num(2.0)
    for count in (0, 1, 5):
        body = b"\x08" + struct.pack(">I", count) + pairs + END
        assert decode_values(body) == [EcmaArray(a=1.0, b=2.0)]


def test_ecma_without_end_marker_at_end_of_data() -> None:
    pairs = _s("a") + _num(1.0)
    head = _str("onMetaData") + b"\x08\x00\x00\x00\x01" + pairs
    assert decode_values(head) == ["onMetaData", EcmaArray(a=1.0)]
    assert decode_values(head + b"\x00\x00") == ["onMetaData", EcmaArray(a=1.0)]


def test_ecma_missing_end_inside_object_is_truncation() -> None:
    body = b"\x03" + _s("m") + b"\x08\x00\x00\x00\x00" + _s("a") + _num(1.0)
    with pytest.raises(Amf0Error, match="truncated object at offset 0"):
        decode_values(body)


# ------------------------------------------------------------------------------ limits


def _nest(depth: int) -> bytes:
    body = b"\x05"
    for _ in range(depth):
        body = b"\x03" + _s("k") + body + END
    return body


def test_max_depth() -> None:
    assert decode_values(_nest(16)) != []
    with pytest.raises(LimitExceeded, match="deeper than 16") as info:
        decode_values(_nest(17))
    assert info.value.limit == "amf_max_depth"
    assert info.value.reason == "limit:amf_max_depth"
    with pytest.raises(LimitExceeded):
        decode_values(_nest(3), max_depth=2)
    assert decode_values(_nest(2), max_depth=2)


@pytest.mark.parametrize("marker", [b"\x0a", b"\x08"])
def test_max_depth_for_arrays(marker: bytes) -> None:
    body = b"\x05"
    for _ in range(5):
        if marker == b"\x0a":
            body = b"\x0a\x00\x00\x00\x01" + body
        else:
            body = b"\x08\x00\x00\x00\x01" + _s("k") + body + END
    assert decode_values(body, max_depth=5)
    with pytest.raises(LimitExceeded) as info:
        decode_values(body, max_depth=4)
    assert info.value.limit == "amf_max_depth"


def test_deep_nesting_never_recurses_without_bound() -> None:
    body = b"\x0a\x00\x00\x00\x01" * 100_000
    with pytest.raises(LimitExceeded):
        decode_values(body)


def test_max_items_object() -> None:
    ok = b"\x03" + b"".join(_s(f"k{i}") + b"\x05" for i in range(4)) + END
    assert decode_values(ok, max_items=4)
    too_many = b"\x03" + b"".join(_s(f"k{i}") + b"\x05" for i in range(5)) + END
    with pytest.raises(LimitExceeded) as info:
        decode_values(too_many, max_items=4)
    assert info.value.limit == "amf_max_items"


def test_max_items_strict_array() -> None:
    assert decode_values(b"\x0a\x00\x00\x00\x04" + b"\x05" * 4, max_items=4)
    with pytest.raises(LimitExceeded) as info:
        decode_values(b"\x0a\x00\x00\x00\x05" + b"\x05" * 5, max_items=4)
    assert info.value.limit == "amf_max_items"
    # A huge claimed count is refused before anything is read.
    with pytest.raises(LimitExceeded):
        decode_values(b"\x0a\xff\xff\xff\xff")


def test_max_items_ecma_count_field_and_pairs() -> None:
    with pytest.raises(LimitExceeded) as info:
        decode_values(b"\x08\xff\xff\xff\xff" + END)
    assert info.value.limit == "amf_max_items"
    # A lying small count does not get around the limit.
    pairs = b"".join(_s(f"k{i}") + b"\x05" for i in range(5))
    with pytest.raises(LimitExceeded):
        decode_values(b"\x08\x00\x00\x00\x00" + pairs + END, max_items=4)


def test_limit_errors_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        decode_values(_nest(40))


# ------------------------------------------------------------------------------ truncation


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x3f\xf0", "truncated number at offset 0"),
        (b"\x01", "truncated boolean at offset 0"),
        (b"\x02\x00", "truncated string at offset 0"),
        (b"\x02\x00\x05abc", "truncated string at offset 0"),
        (b"\x0c\x00\x00\x01", "truncated long string at offset 0"),
        (b"\x0c\x00\x00\x00\x09abc", "truncated long string at offset 0"),
        (b"\x0f\x00\x00\x00\x09abc", "truncated XML document at offset 0"),
        (b"\x0b" + b"\x00" * 9, "truncated date at offset 0"),
        (b"\x07\x00", "truncated reference at offset 0"),
        (b"\x03", "truncated object at offset 0"),
        (b"\x03\x00\x01", "truncated object key at offset 0"),
        (b"\x03\x00\x01a", "truncated value at offset 4"),
        (b"\x03\x00\x01a\x05", "truncated object at offset 0"),
        (b"\x03\x00\x00", "truncated object at offset 0"),
        (b"\x10\x00", "truncated typed object class name at offset 0"),
        (b"\x10\x00\x03ab", "truncated typed object at offset 0"),
        (b"\x10\x00\x01a\x00\x01b", "truncated value at offset 7"),
        (b"\x08\x00\x00", "truncated ECMA array at offset 0"),
        (b"\x08\x00\x00\x00\x01\x00", "truncated ECMA array at offset 0"),
        (b"\x08\x00\x00\x00\x01\x00\x01a", "truncated value at offset 8"),
        (b"\x0a\x00\x00\x00", "truncated strict array at offset 0"),
        (b"\x0a\x00\x00\x00\x02\x05", "truncated strict array at offset 0"),
        (b"\x0a\x00\x00\x00\x02\x00\x00", "truncated number at offset 5"),
    ],
)
def test_truncation(body: bytes, message: str) -> None:
    with pytest.raises(Amf0Error, match=message):
        decode_values(body)


def test_truncation_offset_counts_from_message_start() -> None:
    body = _str("connect") + _num(1.0) + b"\x02\x00\x10abc"
    with pytest.raises(Amf0Error, match="truncated string at offset 19"):
        decode_values(body)


def test_every_prefix_of_a_command_fails_cleanly() -> None:
    values: list[AmfValue] = [
        "connect",
        1.0,
        {"app": "live", "list": [1.0, None], "date": AmfDate(1.0, 0)},
        None,
    ]
    body = encode_values(*values)
    boundaries = {len(encode_values(*values[:n])): n for n in range(len(values) + 1)}
    for cut in range(len(body) + 1):
        if cut in boundaries:
            assert decode_values(body[:cut]) == values[: boundaries[cut]]
        else:
            with pytest.raises(Amf0Error, match="truncated"):
                decode_values(body[:cut])
