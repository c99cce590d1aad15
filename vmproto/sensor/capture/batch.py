"""The unit that flows from capture to decode: frames of one link type with their times."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class PacketBatch(NamedTuple):
    """`ts_ns[i]` is the capture time of `frames[i]` in ns; all frames share `linktype`.

    `orig_len[i]` is the length on the wire (larger than the frame when the snaplen cut it). `frames` is a
    list of `bytes`, or a `FrameList` (frames left in the reader's buffer, sliced on access) from the
    pcap reader: treat it as a read-only sequence of `bytes`.
    """

    linktype: int
    ts_ns: list[int]
    frames: Sequence[bytes]
    orig_len: list[int]
