"""A byte source that turns one fuzz input into structured choices, and the matching encoder.

Harnesses read their input through :class:`ByteSource` (like atheris' FuzzedDataProvider, but pure Python
and with a stable, documented encoding), so the same input means the same run under atheris, under the
seeded mutator and in a regression test. :class:`ScriptWriter` writes that encoding, which is how the seed
generator builds inputs that start from valid dialogues.

Encoding: integers are little endian and taken whole when the input has enough bytes left; when it runs out
every read returns zero / empty, so any byte string is a valid input.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["ByteSource", "ScriptWriter"]

T = TypeVar("T")


class ByteSource:
    """Sequential reader of a fuzz input."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not consumed yet."""
        return len(self._data) - self._pos

    def _take(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def u8(self) -> int:
        """Return the next byte (0 when exhausted)."""
        chunk = self._take(1)
        return chunk[0] if chunk else 0

    def u16(self) -> int:
        """Return the next u16 LE (missing bytes read as zero)."""
        return int.from_bytes(self._take(2).ljust(2, b"\0"), "little")

    def u32(self) -> int:
        """Return the next u32 LE (missing bytes read as zero)."""
        return int.from_bytes(self._take(4).ljust(4, b"\0"), "little")

    def boolean(self) -> bool:
        """Return the low bit of the next byte."""
        return bool(self.u8() & 1)

    def below(self, n: int) -> int:
        """Return an integer in ``0 .. n-1`` (``n`` <= 65536)."""
        if n <= 1:
            return 0
        return (self.u8() if n <= 256 else self.u16()) % n

    def pick(self, options: Sequence[T]) -> T:
        """Return one of ``options`` (which must not be empty)."""
        return options[self.below(len(options))]

    def blob(self) -> bytes:
        """Return a length-prefixed chunk: u16 length, then up to that many bytes."""
        return self._take(self.u16())

    def rest(self) -> bytes:
        """Return everything not consumed yet."""
        return self._take(self.remaining)


class ScriptWriter:
    """Builds an input that :class:`ByteSource` reads back value for value."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> ScriptWriter:
        """Append one byte."""
        self._parts.append(bytes([value & 0xFF]))
        return self

    def u16(self, value: int) -> ScriptWriter:
        """Append a u16 LE."""
        self._parts.append(struct.pack("<H", value & 0xFFFF))
        return self

    def u32(self, value: int) -> ScriptWriter:
        """Append a u32 LE."""
        self._parts.append(struct.pack("<I", value & 0xFFFFFFFF))
        return self

    def choice(self, index: int, count: int) -> ScriptWriter:
        """Append what :meth:`ByteSource.below` (and ``pick``) reads as ``index`` of ``count``."""
        if count <= 1:
            return self
        return self.u8(index) if count <= 256 else self.u16(index)

    def blob(self, data: bytes) -> ScriptWriter:
        """Append a length-prefixed chunk (at most 65535 bytes; longer data is cut)."""
        data = bytes(data[:0xFFFF])
        self._parts.append(struct.pack("<H", len(data)) + data)
        return self

    def raw(self, data: bytes) -> ScriptWriter:
        """Append bytes as they are (for :meth:`ByteSource.rest`)."""
        self._parts.append(bytes(data))
        return self

    def build(self) -> bytes:
        """Return the input."""
        return b"".join(self._parts)
