"""Writers of classic pcap (ns or µs timestamps) and pcapng (ns), e.g. for per-call captures and tests."""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from .errors import CaptureOptionError

_NS = 1_000_000_000


class PcapWriter:
    """Writes a classic pcap file. `nanosecond=True` uses the ns magic (a1b23c4d).

    Frames longer than `snaplen` are cut and keep their wire length as `orig_len`.
    """

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, linktype: int, snaplen: int = 262144,
                 nanosecond: bool = True) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise CaptureOptionError(f"snaplen must be 1..2^31-1, got {snaplen}")
        if not 0 <= linktype <= 0xFFFF:
            raise CaptureOptionError(f"linktype must be 0..65535, got {linktype}")
        self._own = not hasattr(target, "write")
        self._f: BinaryIO = open(target, "wb") if self._own else target  # type: ignore[arg-type]  # noqa: SIM115
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self._rec = struct.Struct("<IIII").pack
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns: int, frame: bytes, orig_len: int | None = None) -> None:
        """Append one record. Raises `CaptureOptionError` for a negative time."""
        if ts_ns < 0:
            raise CaptureOptionError(f"timestamp must be >= 0, got {ts_ns}")
        sec, frac = divmod(ts_ns, _NS)
        if not self.nanosecond:
            frac //= 1000
        data = frame[: self.snaplen]
        self._f.write(self._rec(sec, frac, len(data), len(frame) if orig_len is None else orig_len))
        self._f.write(data)

    def close(self) -> None:
        """Flush; close the file if this writer opened it."""
        self._f.flush()
        if self._own:
            self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapngWriter:
    """Writes a pcapng file with one interface per link type, ns resolution (if_tsresol = 9)."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, snaplen: int = 262144) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise CaptureOptionError(f"snaplen must be 1..2^31-1, got {snaplen}")
        self._own = not hasattr(target, "write")
        self._f: BinaryIO = open(target, "wb") if self._own else target  # type: ignore[arg-type]  # noqa: SIM115
        self.snaplen = snaplen
        self._ifaces: dict[int, int] = {}
        self._block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))

    def _block(self, btype: int, body: bytes) -> None:
        pad = (-len(body)) % 4
        total = 12 + len(body) + pad
        self._f.write(struct.pack("<II", btype, total) + body + b"\x00" * pad + struct.pack("<I", total))

    def _iface(self, linktype: int) -> int:
        idx = self._ifaces.get(linktype)
        if idx is None:
            if not 0 <= linktype <= 0xFFFF:
                raise CaptureOptionError(f"linktype must be 0..65535, got {linktype}")
            opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
            self._block(1, struct.pack("<HHI", linktype, 0, self.snaplen) + opts)
            idx = self._ifaces[linktype] = len(self._ifaces)
        return idx

    def write(self, ts_ns: int, frame: bytes, linktype: int, orig_len: int | None = None) -> None:
        """Append one enhanced packet block on the interface of `linktype`."""
        if ts_ns < 0:
            raise CaptureOptionError(f"timestamp must be >= 0, got {ts_ns}")
        idx = self._iface(linktype)
        data = frame[: self.snaplen]
        head = struct.pack("<IIIII", idx, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                           len(frame) if orig_len is None else orig_len)
        self._block(6, head + data)

    def close(self) -> None:
        """Flush; close the file if this writer opened it."""
        self._f.flush()
        if self._own:
            self._f.close()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
