"""Fuzz targets: AMF0 and FLV parsers raise only ProtocolError on any input; AMF0 round-trips."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ripplecast.errors import ProtocolError
from ripplecast.media.amf0 import (
    UNDEFINED,
    AmfDate,
    AmfValue,
    EcmaArray,
    decode_values,
    encode_value,
    encode_values,
)
from ripplecast.media.flv import (
    FlvReader,
    flv_file_header,
    make_packet,
    parse_audio_tag_header,
    parse_video_tag_header,
)
from ripplecast.media.packet import build_flv_tag

FUZZ = settings(max_examples=300, deadline=None)

# Inputs that start like the real thing reach deeper than uniformly random bytes.
_AMF_SEEDS = [
    b"",
    encode_values("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}),
    encode_values("@setDataFrame", "onMetaData", EcmaArray(width=320.0, encoder="Lavf")),
    encode_value([1.0, None, UNDEFINED, AmfDate(0.0, 0), {"a": [True]}]),
]
_FLV_PREFIX = flv_file_header(has_audio=True, has_video=True) + build_flv_tag(
    9, 0, b"\x17\x00\x00\x00\x00\x01"
)


def _prefixed(prefixes: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda prefix, cut, tail: prefix[:cut] + tail,
        st.sampled_from(prefixes),
        st.integers(min_value=0, max_value=256),
        st.binary(max_size=2048),
    )


@FUZZ
@given(st.one_of(st.binary(max_size=2048), _prefixed(_AMF_SEEDS)))
def test_decode_values_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_values(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), _prefixed([b"\x17\x01", b"\x91hvc1", b"\x90av01"])))
def test_parse_video_tag_header_raises_only_protocol_errors(data: bytes) -> None:
    try:
        info = parse_video_tag_header(data)
    except ProtocolError:
        return
    assert 1 <= info.header_size <= len(data)
    assert -(2**23) <= info.composition_offset < 2**23
    make_packet(9, 0, data)


@FUZZ
@given(st.binary(max_size=2048))
def test_parse_audio_tag_header_raises_only_protocol_errors(data: bytes) -> None:
    try:
        info = parse_audio_tag_header(data)
    except ProtocolError:
        return
    assert 1 <= info.header_size <= len(data)
    make_packet(8, 0, data)


@FUZZ
@given(
    st.one_of(st.binary(max_size=2048), _prefixed([_FLV_PREFIX])),
    st.lists(st.integers(min_value=1, max_value=64), max_size=32),
)
def test_flv_reader_raises_only_protocol_errors(data: bytes, splits: list[int]) -> None:
    reader = FlvReader(max_tag_size=4096)
    pos = 0
    try:
        for size in [*splits, len(data)]:
            reader.feed(data[pos : pos + size])
            pos += size
            while reader.next_event() is not None:
                pass
    except ProtocolError:
        pass


_keys = st.text(max_size=8)
_scalars: st.SearchStrategy[AmfValue] = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=20),
    st.none(),
    st.just(UNDEFINED),
    st.builds(
        AmfDate,
        st.floats(allow_nan=False),
        st.integers(min_value=-0x8000, max_value=0x7FFF),
    ),
)


def _containers(children: st.SearchStrategy[AmfValue]) -> st.SearchStrategy[AmfValue]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_keys, children, max_size=5),
        st.dictionaries(_keys, children, max_size=5).map(EcmaArray),
    )


_values = st.recursive(_scalars, _containers, max_leaves=30)


def _same(a: AmfValue, b: AmfValue) -> bool:
    """Equal, with the container types (object versus ECMA array) equal too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@FUZZ
@given(st.lists(_values, max_size=4))
def test_amf0_round_trip(values: list[AmfValue]) -> None:
    body = encode_values(*values)
    decoded = decode_values(body)
    assert _same(decoded, values)
    assert encode_values(*decoded) == body
