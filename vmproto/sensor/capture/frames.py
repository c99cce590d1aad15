"""`FrameList`: the frames of a batch as offsets into one buffer, sliced only when someone asks for them.

The pcap reader hands these out instead of a list of `bytes`, so the decoder can read every frame in place
(and slice its records straight from the read buffer) while every other consumer still sees an ordinary
read-only sequence of `bytes`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat
from operator import getitem
from typing import overload

#: array typecode of an unsigned 32-bit offset (what the C kernel reads).
U32 = "I" if array("I").itemsize == 4 else "L"


class FrameList(Sequence[bytes]):
    """Frame `i` is `buffer[starts[i]:ends[i]]`. Compares equal to any sequence of the same frames.

    `starts` and `ends` are `array(U32)` of equal length (raises ValueError otherwise). Indexing with an int
    returns `bytes` (IndexError when out of range); with a slice, another `FrameList` over the same buffer.
    """

    __slots__ = ("buffer", "starts", "ends")

    def __init__(self, buffer: bytes, starts: array, ends: array) -> None:
        if len(starts) != len(ends):
            raise ValueError(f"{len(starts)} frame starts for {len(ends)} ends")
        self.buffer = buffer
        self.starts = starts
        self.ends = ends

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> FrameList:
        """Return a `FrameList` holding copies of `frames` in one joined buffer.

        Raises OverflowError when the frames add up to 4 GiB or more (offsets are 32-bit)."""
        ends = array(U32, accumulate(map(len, frames)))
        starts = array(U32, (0,)) + ends[:-1] if ends else array(U32)
        return cls(b"".join(frames), starts, ends)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> FrameList: ...

    def __getitem__(self, index: int | slice) -> bytes | FrameList:
        if isinstance(index, slice):
            return FrameList(self.buffer, self.starts[index], self.ends[index])
        return self.buffer[self.starts[index] : self.ends[index]]

    def __iter__(self) -> Iterator[bytes]:
        return map(getitem, repeat(self.buffer), map(slice, self.starts, self.ends))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes | bytearray):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence semantics, like list

    def __repr__(self) -> str:
        return f"FrameList({len(self)} frames, {len(self.buffer)} buffer bytes)"
