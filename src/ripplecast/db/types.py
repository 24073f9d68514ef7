"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB.

- `UTCDateTime`: Python side is always an *aware* datetime in UTC. PostgreSQL stores
  `TIMESTAMP WITH TIME ZONE`; SQLite and MariaDB have no zone, so the value is stored as naive
  UTC (MariaDB as `DATETIME(6)`, keeping microseconds) and marked UTC again when read.
  Naive datetimes are refused on the way in: they are a bug (whose local time?).
- `StrEnumType`: a `StrEnum` stored as a short VARCHAR (not a native ENUM, which only
  PostgreSQL and MySQL have, differently); the allowed values are a CHECK in the schema.
- `WordSet`: a small set of words (scopes, event names) stored as one space-separated string,
  sorted so equal sets store equal text; read back as a tuple.
- `key_string(n)`: VARCHAR(n) compared byte for byte everywhere. MariaDB's default utf8mb4
  collations ignore case (and accents), so `Main` and `main` would collide in a unique index
  there but not elsewhere; the binary collation makes every engine agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import DateTime, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

E = TypeVar("E", bound=StrEnum)

_MYSQL = ("mysql", "mariadb")


def key_string(length: int) -> TypeEngine[str]:
    """VARCHAR(length), binary (case-sensitive) collation on MySQL/MariaDB."""
    binary = mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin")
    return String(length).with_variant(binary, *_MYSQL)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every engine (see the module docstring)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(TypeDecorator[E], Generic[E]):
    """A `StrEnum` member stored as its value in a VARCHAR of `length`."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int) -> None:
        longest = max(len(member.value) for member in enum_class)
        if longest > length:
            raise ValueError(f"{enum_class.__name__} has a value longer than {length}")
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        return self.enum_class(value)


class WordSet(TypeDecorator[tuple[str, ...]]):
    """A set of words (no whitespace) stored space-separated and sorted; read as a tuple."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: tuple[str, ...] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            raise TypeError("pass a collection of words, not a string")
        words = sorted(set(value))
        for word in words:
            if not word or any(c.isspace() for c in word):
                raise ValueError(f"invalid word {word!r}: empty or contains whitespace")
        return " ".join(words)

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(value.split())
