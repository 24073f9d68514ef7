"""AMF0 encoding and decoding (Adobe "Action Message Format -- AMF 0"), as RTMP uses it.

This module owns the AMF0 value model and its wire form: the values of RTMP command messages
(`connect`, `createStream`, `publish`, `onStatus`, ...) and data messages (`@setDataFrame`,
`onMetaData`). It is sans-I/O: bytes in, Python values out, and back.

Value model (what each AMF0 type becomes):

- number 0x00 -> `float` (an IEEE 754 double on the wire; `int` encodes as a number too)
- boolean 0x01 -> `bool`; string 0x02 and long string 0x0C -> `str`; XML document 0x0F -> `str`
- object 0x03 and typed object 0x10 -> `dict[str, AmfValue]` (the class name is dropped)
- null 0x05 -> `None`; undefined 0x06 and unsupported 0x0D -> `UNDEFINED`
- ECMA array 0x08 -> `EcmaArray` (a `dict`, so re-encoding keeps the 0x08 marker)
- strict array 0x0A -> `list`; date 0x0B -> `AmfDate`
- reference 0x07 -> the very object it references (complex objects are numbered from 0 in the
  order their markers appear in the decoded message body)

Invariants:

- Decoding never lets `IndexError`, `struct.error`, `UnicodeDecodeError` or `RecursionError`
  escape: malformed input raises `Amf0Error`, an exceeded bound raises `LimitExceeded` (both
  `ProtocolError`: the peer misbehaved).
- Nesting is bounded by `max_depth` (limit "amf_max_depth") and the number of elements of one
  object or array by `max_items` (limit "amf_max_items"), so a small message cannot make the
  decoder recurse deeply or allocate without bound.
- Encoding something that has no AMF0 form raises `TypeError` (our misuse, not the peer's);
  a value AMF0 cannot represent (a key over 65535 bytes, a circular structure) raises `ValueError`.
- ECMA arrays are read leniently, like ffmpeg: their count is only checked against `max_items`,
  pairs are read until the object-end marker, and the end of the data also ends the array.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, TypeAlias, Union

from ripplecast.errors import LimitExceeded, ProtocolError

__all__ = [
    "UNDEFINED",
    "Amf0Error",
    "AmfDate",
    "AmfValue",
    "EcmaArray",
    "Undefined",
    "decode_value",
    "decode_values",
    "encode_value",
    "encode_values",
]

# AMF0 type markers (spec section 2.1).
NUMBER_MARKER = 0x00
BOOLEAN_MARKER = 0x01
STRING_MARKER = 0x02
OBJECT_MARKER = 0x03
MOVIECLIP_MARKER = 0x04
NULL_MARKER = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE_MARKER = 0x07
ECMA_ARRAY_MARKER = 0x08
OBJECT_END_MARKER = 0x09
STRICT_ARRAY_MARKER = 0x0A
DATE_MARKER = 0x0B
LONG_STRING_MARKER = 0x0C
UNSUPPORTED_MARKER = 0x0D
RECORDSET_MARKER = 0x0E
XML_DOCUMENT_MARKER = 0x0F
TYPED_OBJECT_MARKER = 0x10
AVMPLUS_OBJECT_MARKER = 0x11

_OBJECT_END = b"\x00\x00\x09"
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class Amf0Error(ProtocolError):
    """The peer sent bytes that are not valid AMF0 (truncated, bad marker, bad UTF-8, ...)."""


class Undefined:
    """The AMF0 undefined value (marker 0x06); there is exactly one instance, `UNDEFINED`."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()
"""The one `Undefined` instance."""


class AmfDate(NamedTuple):
    """An AMF0 date (marker 0x0B)."""

    millis: float
    """Milliseconds since 1970-01-01T00:00:00 UTC."""
    timezone: int = 0
    """The signed 16-bit time-zone field; the spec reserves it and says it should be 0."""


# Union, not "|": the forward reference to EcmaArray must be valid at runtime.
AmfValue: TypeAlias = Union[
    float,
    int,
    bool,
    str,
    Undefined,
    dict[str, "AmfValue"],
    "EcmaArray",
    list["AmfValue"],
    AmfDate,
    None,
]
"""Any value that AMF0 can carry (see the module docstring for the mapping)."""


class EcmaArray(dict[str, AmfValue]):
    """An AMF0 ECMA array (marker 0x08): an associative array, e.g. the `onMetaData` body.

    It is a plain `dict` so it reads like one; its type only tells the encoder to write 0x08.
    """

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# Encoding


def encode_value(value: AmfValue) -> bytes:
    """Return the AMF0 encoding of one value (marker byte first).

    Raises `TypeError` for a Python type with no AMF0 form and `ValueError` for a value AMF0
    cannot represent (an object key longer than 65535 UTF-8 bytes, a circular structure, an
    integer too large for a double).
    """
    out = bytearray()
    _encode(value, out, set())
    return bytes(out)


def encode_values(*values: AmfValue) -> bytes:
    """Return the AMF0 encoding of `values` one after another, e.g. a whole command message."""
    out = bytearray()
    for value in values:
        _encode(value, out, set())
    return bytes(out)


def _encode(value: object, out: bytearray, active: set[int]) -> None:
    # bool is a subclass of int, and AmfDate of tuple: test them before their base types.
    if value is None:
        out.append(NULL_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN_MARKER, 1 if value else 0))
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"integer {value} is too large for an AMF0 number") from None
        out.append(NUMBER_MARKER)
        out += _DOUBLE.pack(number)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > _U16_MAX:
            out.append(LONG_STRING_MARKER)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING_MARKER)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(value, Undefined):
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, AmfDate):
        if not -0x8000 <= value.timezone <= 0x7FFF:
            raise ValueError(f"AmfDate timezone {value.timezone} does not fit in 16 bits")
        out.append(DATE_MARKER)
        out += _DATE.pack(float(value.millis), value.timezone)
    elif isinstance(value, dict | list | tuple):
        if id(value) in active:
            raise ValueError("circular structure has no AMF0 encoding")
        active.add(id(value))
        if isinstance(value, dict):
            if isinstance(value, EcmaArray):
                if len(value) > _U32_MAX:  # pragma: no cover - cannot be built in memory
                    raise ValueError("ECMA array has too many entries")
                out.append(ECMA_ARRAY_MARKER)
                out += _U32.pack(len(value))
            else:
                out.append(OBJECT_MARKER)
            for key, item in value.items():
                _encode_key(key, out)
                _encode(item, out, active)
            out += _OBJECT_END
        else:
            out.append(STRICT_ARRAY_MARKER)
            out += _U32.pack(len(value))
            for item in value:
                _encode(item, out, active)
        active.discard(id(value))
    else:
        raise TypeError(f"{type(value).__name__} has no AMF0 encoding")


def _encode_key(key: object, out: bytearray) -> None:
    if not isinstance(key, str):
        raise TypeError(f"AMF0 object keys must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if len(raw) > _U16_MAX:
        raise ValueError(f"AMF0 object key of {len(raw)} bytes exceeds 65535")
    out += _U16.pack(len(raw))
    out += raw


# --------------------------------------------------------------------------------------------
# Decoding


def decode_values(data: bytes, *, max_depth: int = 16, max_items: int = 4096) -> list[AmfValue]:
    """Decode every AMF0 value in `data`, a complete message body, and return them in order.

    Raises `Amf0Error` for malformed or truncated input and `LimitExceeded` when nesting exceeds
    `max_depth` or one object/array holds more than `max_items` elements.
    """
    decoder = _Decoder(data, max_depth, max_items)
    values: list[AmfValue] = []
    while decoder.pos < len(data):
        values.append(decoder.value(0))
    return values


def decode_value(
    data: bytes, offset: int, *, max_depth: int = 16, max_items: int = 4096
) -> tuple[AmfValue, int]:
    """Decode the one AMF0 value that starts at `offset` in `data`.

    Returns the value and the offset just past it. Raises like `decode_values`; an `offset`
    outside `data` raises `ValueError` (a caller's bug). References resolve only to objects
    decoded within this call.
    """
    if not 0 <= offset <= len(data):
        raise ValueError(f"offset {offset} is outside the {len(data)} bytes of data")
    decoder = _Decoder(data, max_depth, max_items)
    decoder.pos = offset
    value = decoder.value(0)
    return value, decoder.pos


class _Decoder:
    """Cursor over one AMF0 message body, with its reference table and limits."""

    __slots__ = ("data", "in_progress", "max_depth", "max_items", "pos", "references")

    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_items = max_items
        # Complex objects in the order their markers appear, for reference 0x07.
        self.references: list[AmfValue] = []
        # Indexes of references whose object is still being decoded (a reference to one would
        # build a cyclic value, which no AMF0 consumer expects).
        self.in_progress: set[int] = set()

    def _need(self, count: int, what: str, start: int) -> None:
        have = len(self.data) - self.pos
        if have < count:
            raise Amf0Error(
                f"truncated {what} at offset {start}: need {count} bytes at offset "
                f"{self.pos}, have {have}"
            )

    def _u16(self, what: str, start: int) -> int:
        self._need(2, what, start)
        (result,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(result)

    def _u32(self, what: str, start: int) -> int:
        self._need(4, what, start)
        (result,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(result)

    def _utf8(self, length: int, what: str, start: int) -> str:
        self._need(length, what, start)
        end = self.pos + length
        try:
            text = str(self.data[self.pos : end], "utf-8")
        except UnicodeDecodeError as exc:
            raise Amf0Error(f"invalid UTF-8 in {what} at offset {start}: {exc.reason}") from None
        self.pos = end
        return text

    def value(self, depth: int) -> AmfValue:
        start = self.pos
        self._need(1, "value", start)
        marker = self.data[start]
        self.pos += 1
        if marker == NUMBER_MARKER:
            self._need(8, "number", start)
            (number,) = _DOUBLE.unpack_from(self.data, self.pos)
            self.pos += 8
            return float(number)
        if marker == BOOLEAN_MARKER:
            self._need(1, "boolean", start)
            flag = self.data[self.pos] != 0
            self.pos += 1
            return flag
        if marker == STRING_MARKER:
            return self._utf8(self._u16("string", start), "string", start)
        if marker == LONG_STRING_MARKER:
            return self._utf8(self._u32("long string", start), "long string", start)
        if marker == XML_DOCUMENT_MARKER:
            return self._utf8(self._u32("XML document", start), "XML document", start)
        if marker == NULL_MARKER:
            return None
        if marker in (UNDEFINED_MARKER, UNSUPPORTED_MARKER):
            return UNDEFINED
        if marker == DATE_MARKER:
            self._need(10, "date", start)
            millis, timezone = _DATE.unpack_from(self.data, self.pos)
            self.pos += 10
            return AmfDate(float(millis), int(timezone))
        if marker == REFERENCE_MARKER:
            index = self._u16("reference", start)
            if index >= len(self.references) or index in self.in_progress:
                raise Amf0Error(f"reference {index} at offset {start} names no decoded object")
            return self.references[index]
        if marker in (OBJECT_MARKER, TYPED_OBJECT_MARKER, ECMA_ARRAY_MARKER, STRICT_ARRAY_MARKER):
            return self._complex(marker, start, depth + 1)
        if marker == AVMPLUS_OBJECT_MARKER:
            raise Amf0Error("AMF3 values are not supported")
        if marker in (MOVIECLIP_MARKER, RECORDSET_MARKER):
            raise Amf0Error(f"reserved AMF0 marker 0x{marker:02x} at offset {start}")
        if marker == OBJECT_END_MARKER:
            raise Amf0Error(f"object-end marker outside an object at offset {start}")
        raise Amf0Error(f"unknown AMF0 marker 0x{marker:02x} at offset {start}")

    def _complex(self, marker: int, start: int, depth: int) -> AmfValue:
        if depth > self.max_depth:
            raise LimitExceeded(
                f"AMF0 nesting deeper than {self.max_depth} at offset {start}",
                limit="amf_max_depth",
            )
        if marker == TYPED_OBJECT_MARKER:
            # The class name only names the type; the members follow as in an anonymous object.
            self._utf8(self._u16("typed object class name", start), "typed object", start)
        index = len(self.references)
        result: AmfValue
        if marker == STRICT_ARRAY_MARKER:
            count = self._u32("strict array", start)
            self._check_items(count, "strict array", start)
            # Each element takes at least one byte: refuse an impossible count before looping.
            self._need(count, "strict array", start)
            items: list[AmfValue] = []
            self.references.append(items)
            self.in_progress.add(index)
            for _ in range(count):
                items.append(self.value(depth))
            result = items
        elif marker == ECMA_ARRAY_MARKER:
            count = self._u32("ECMA array", start)
            self._check_items(count, "ECMA array", start)
            array = EcmaArray()
            self.references.append(array)
            self.in_progress.add(index)
            self._pairs(array, depth, start, "ECMA array", lenient_end=True)
            result = array
        else:
            obj: dict[str, AmfValue] = {}
            self.references.append(obj)
            self.in_progress.add(index)
            what = "object" if marker == OBJECT_MARKER else "typed object"
            self._pairs(obj, depth, start, what, lenient_end=False)
            result = obj
        self.in_progress.discard(index)
        return result

    def _check_items(self, count: int, what: str, start: int) -> None:
        if count > self.max_items:
            raise LimitExceeded(
                f"AMF0 {what} at offset {start} has {count} elements, over {self.max_items}",
                limit="amf_max_items",
            )

    def _pairs(
        self, target: dict[str, AmfValue], depth: int, start: int, what: str, *, lenient_end: bool
    ) -> None:
        data = self.data
        items = 0
        while True:
            remaining = len(data) - self.pos
            if lenient_end and (
                remaining == 0 or (remaining == 2 and data[self.pos] == data[self.pos + 1] == 0)
            ):
                # Encoders that omit (part of) the end marker of a trailing ECMA array.
                self.pos = len(data)
                return
            key = self._utf8(self._u16(what, start), f"{what} key", start)
            if not key:
                self._need(1, what, start)
                if data[self.pos] == OBJECT_END_MARKER:
                    self.pos += 1
                    return
            items += 1
            self._check_items(items, what, start)
            target[key] = self.value(depth)
