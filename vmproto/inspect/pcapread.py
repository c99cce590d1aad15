"""Reading capture files: classic pcap (both byte orders, µs and ns) and pcapng.

A truncated file is not an error of the whole run: the frames read so far are returned and `Capture.problem` says
where the file ended, so the inspector can still decode every complete message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vmproto.inspect.errors import InspectError

# Link-layer header types (tcpdump.org/linktypes.html) the inspector understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# Generous bound on one record: a corrupt length must not make us allocate gigabytes.
_MAX_RECORD = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame. `number` is 1-based like Wireshark; `ts` is seconds as a float rounded to µs."""

    number: int
    ts: float
    linktype: int
    data: bytes


@dataclass(slots=True)
class Capture:
    """All frames of a file, plus `problem`: why reading stopped early (None when the file was complete)."""

    frames: list[Frame] = field(default_factory=list)
    problem: str | None = None


def _ts(sec: int, frac: int, per_second: int) -> float:
    # Round to microseconds: that is the precision of the reference transcripts (and of classic pcap).
    if per_second == 1_000_000:
        return round(sec + frac / 1_000_000, 6)
    return round(sec + frac / per_second, 6)


def read_capture(path: str | Path) -> Capture:
    """Read every frame of a pcap or pcapng file.

    Returns a `Capture`; a file cut short yields the frames before the cut and a `problem` text.
    Raises InspectError when the file cannot be opened or is not a pcap/pcapng file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InspectError(f"cannot read capture {path}: {exc.strerror or exc}") from None
    return parse_capture(data)


def parse_capture(data: bytes) -> Capture:
    """Parse capture bytes (see `read_capture`). Raises InspectError for an unknown file format."""
    if len(data) >= 4 and data[:4] in _PCAP_MAGICS:
        return _parse_pcap(data)
    if len(data) >= 4 and data[:4] == _PCAPNG_MAGIC:
        return _parse_pcapng(data)
    raise InspectError("not a pcap or pcapng file (unknown magic number)")


def _parse_pcap(data: bytes) -> Capture:
    order, per_second = _PCAP_MAGICS[data[:4]]
    cap = Capture()
    if len(data) < 24:
        cap.problem = "capture file truncated inside the pcap file header"
        return cap
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    pos = 24
    number = 0
    record = struct.Struct(order + "IIII")
    while pos < len(data):
        if pos + 16 > len(data):
            cap.problem = f"capture file truncated inside the record header of frame {number + 1}"
            break
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        if incl > _MAX_RECORD:
            cap.problem = f"frame {number + 1}: record length {incl} is not plausible; file corrupt"
            break
        if pos + 16 + incl > len(data):
            cap.problem = (
                f"capture file truncated inside frame {number + 1} "
                f"({len(data) - pos - 16} of {incl} bytes present)"
            )
            break
        number += 1
        cap.frames.append(Frame(number, _ts(sec, frac, per_second), linktype, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return cap


def _pcapng_blocks(data: bytes, cap: Capture) -> Iterator[tuple[int, bytes, str]]:
    """Yield (block type, body, byte order) for each complete pcapng block; set cap.problem on a cut."""
    pos = 0
    order = "<"
    while pos < len(data):
        if pos + 12 > len(data):
            cap.problem = "capture file truncated inside a pcapng block header"
            return
        if data[pos : pos + 4] == _PCAPNG_MAGIC:
            bom = data[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                cap.problem = "pcapng section header with an unknown byte-order magic"
                return
        btype, blen = struct.unpack_from(order + "II", data, pos)
        if blen < 12 or blen % 4 or blen > _MAX_RECORD:
            cap.problem = f"pcapng block at file offset {pos} has an invalid length {blen}"
            return
        if pos + blen > len(data):
            cap.problem = f"capture file truncated inside a pcapng block at file offset {pos}"
            return
        yield btype, data[pos + 8 : pos + blen - 4], order
        pos += blen


def _parse_pcapng(data: bytes) -> Capture:
    cap = Capture()
    interfaces: list[tuple[int, int]] = []  # (linktype, units per second)
    number = 0
    for btype, body, order in _pcapng_blocks(data, cap):
        if btype == 0x0A0D0D0A:  # section header: interface ids restart
            interfaces = []
        elif btype == 0x00000001:  # interface description
            linktype = struct.unpack_from(order + "H", body, 0)[0]
            interfaces.append((linktype, _if_tsresol(body[8:], order)))
        elif btype == 0x00000006:  # enhanced packet block
            if len(body) < 20:
                cap.problem = f"pcapng enhanced packet block {number + 1} is too short"
                return cap
            ifid, ts_hi, ts_lo, incl, _orig = struct.unpack_from(order + "IIIII", body, 0)
            if ifid >= len(interfaces) or incl > len(body) - 20:
                cap.problem = f"pcapng packet {number + 1}: unknown interface or bad length"
                return cap
            linktype, per_second = interfaces[ifid]
            units = (ts_hi << 32) | ts_lo
            number += 1
            sec, frac = divmod(units, per_second)
            cap.frames.append(Frame(number, _ts(sec, frac, per_second), linktype, body[20 : 20 + incl]))
        elif btype == 0x00000003:  # simple packet block: no timestamp, interface 0
            if not interfaces or len(body) < 4:
                cap.problem = f"pcapng simple packet block {number + 1} without an interface"
                return cap
            number += 1
            cap.frames.append(Frame(number, 0.0, interfaces[0][0], body[4:]))
    return cap


def _if_tsresol(options: bytes, order: str) -> int:
    """Units per second from an interface's if_tsresol option (default: microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return 2 ** (value & 0x7F) if value & 0x80 else 10 ** value
        pos += 4 + ((length + 3) & ~3)
    return 1_000_000
