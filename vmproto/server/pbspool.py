"""Where accepted packetbuffer packets go (spec §9): the `PacketSink` interface and a rotating pcap spool.

Until the central runs the sensor's call analysis on mirrored packets, every accepted container is appended to a
per-sensor pcap spool: `<dir>/<sensor>/pb-<UTC time>-<n>.pcap`, one classic pcap (ns timestamps) per link type,
rotated by size and age. The analyzer will implement `PacketSink` too and replace (or sit beside) the spool.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from vmproto.logs import log_event
from vmproto.sensor.capture.writer import PcapWriter
from vmproto.wire import pbkernel
from vmproto.wire.pbstore import Container

__all__ = ["NullSink", "PacketSink", "PcapSpool", "SensorIdentity", "SpoolError"]

log = logging.getLogger("vmproto.server.pbspool")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class SpoolError(Exception):
    """The spool directory or a spool file cannot be written."""


@dataclass(frozen=True, slots=True)
class SensorIdentity:
    """Who sent a container: the handshake's `sensor_id` (0 when none), `sensor_name` and the source address."""

    sensor_id: int
    sensor_name: str
    address: str

    @property
    def label(self) -> str:
        """A file-system safe name: `<sensor_id>` when > 0, else the address."""
        text = str(self.sensor_id) if self.sensor_id > 0 else f"addr-{self.address}"
        return _SAFE.sub("_", text)


class PacketSink(Protocol):
    """Consumer of accepted packetbuffer containers (already validated, duplicates removed)."""

    async def accept(self, sensor: SensorIdentity, container: Container) -> int:
        """Take every packet of `container`; return how many were taken. Raises SpoolError on storage errors."""
        ...

    async def aclose(self) -> None:
        """Flush and release everything."""
        ...


class NullSink:
    """`PacketSink` that only counts what it is given (benchmarks of the channel without storage, tests)."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.containers = 0

    async def accept(self, sensor: SensorIdentity, container: Container) -> int:
        count = len(container)
        self.packets += count
        self.bytes += container.header.size - count * container.header.header_size
        self.containers += 1
        return count

    async def aclose(self) -> None:
        return None


class _File:
    __slots__ = ("bytes", "fh", "linktype", "opened", "path", "writer")

    def __init__(self, path: Path, linktype: int) -> None:
        self.path = path
        self.linktype = linktype
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.writer = PcapWriter(self.fh, linktype)
        self.opened = time.monotonic()
        self.bytes = 24

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.fh.close()


class PcapSpool:
    """`PacketSink` writing rotating pcap files per sensor. File I/O runs in a worker thread, one block at a time
    (a lock keeps the per-sensor files consistent when several connections of one sensor deliver at once)."""

    def __init__(self, directory: str | Path, *, max_file_bytes: int = 64 * 1024 * 1024,
                 max_file_age: float = 300.0) -> None:
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes
        self.max_file_age = max_file_age
        self._files: dict[tuple[str, int], _File] = {}
        self._lock = trio.Lock()
        self._seq = 0
        self.packets = 0

    async def accept(self, sensor: SensorIdentity, container: Container) -> int:
        async with self._lock:
            count = await trio.to_thread.run_sync(self._write, sensor.label, container)
        self.packets += count
        return count

    def _write(self, label: str, container: Container) -> int:
        try:
            count = self._write_records(label, container)
            for (lab, _lt), f in self._files.items():
                if lab == label:
                    f.fh.flush()  # readers (and a crash) see whole blocks
        except OSError as exc:
            raise SpoolError(f"cannot write packetbuffer spool under {self.directory}: {exc}") from exc
        return count

    def _write_records(self, label: str, container: Container) -> int:
        """Append the container's packets as pcap records (ns time, caplen, max(len, caplen)); one write per run of
        packets of one link type (packet `dlink` 0 = the container's). A file is rotated between runs, so it may
        exceed `max_file_bytes` by up to one container. Runs in the worker thread: the kernel call and the write
        release the GIL, so the connection's I/O goes on meanwhile."""
        k = pbkernel.load()
        if k is None:
            return self._write_records_python(label, container)
        ffi = k.ffi
        area = ffi.from_buffer(container.area)
        n = len(container)
        out = bytearray(len(container.area))  # a record (16 + caplen) is smaller than its packet (36/58 + caplen)
        out_c = ffi.from_buffer(out)
        offs = ffi.from_buffer("uint32_t[]", container.offsets)
        written = ffi.new("uint64_t *")
        dlink = ffi.new("uint32_t *")
        hdr_size = container.header.header_size
        default_dlink = container.header.dlink
        i = 0
        while i < n:
            written[0] = 0
            nxt = k.lib.pb_to_pcap(area, offs, i, n, hdr_size, default_dlink, out_c, written, dlink)
            f = self._file(label, dlink[0])
            f.fh.write(memoryview(out)[: written[0]])
            f.bytes += written[0]
            i = nxt
        return n

    def _write_records_python(self, label: str, container: Container) -> int:
        default_dlink = container.header.dlink
        count = 0
        for ts, us, caplen, length, _encaps, _ipoff, dlink, _vlan, _flags, data in container.iter_packets():
            f = self._file(label, dlink or default_dlink)
            # A usec field >= 10^6 carries into the seconds, which wrap at 32 bits (as in the kernel).
            sec, frac = divmod(ts * 1_000_000_000 + us * 1000, 1_000_000_000)
            f.writer.write((sec & 0xFFFFFFFF) * 1_000_000_000 + frac, bytes(data), max(length, caplen))
            f.bytes += 16 + caplen
            count += 1
        return count

    def _file(self, label: str, linktype: int) -> _File:
        key = (label, linktype)
        f = self._files.get(key)
        if f is not None and (f.bytes >= self.max_file_bytes or time.monotonic() - f.opened >= self.max_file_age):
            f.close()
            log_event(log, logging.INFO, "pb spool file closed", file=str(f.path), bytes=f.bytes)
            f = None
        if f is None:
            folder = self.directory / label
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            f = _File(folder / f"pb-{stamp}-{self._seq}-dlt{linktype}.pcap", linktype)
            self._files[key] = f
            log_event(log, logging.INFO, "pb spool file opened", file=str(f.path), linktype=linktype)
        return f

    def files(self) -> list[Path]:
        """Every spool file written so far (open or closed), sorted."""
        return sorted(self.directory.glob("*/pb-*.pcap")) if self.directory.is_dir() else []

    async def aclose(self) -> None:
        async with self._lock:
            files, self._files = list(self._files.values()), {}
            for f in files:
                try:
                    f.close()
                except OSError as exc:
                    log_event(log, logging.ERROR, "pb spool close failed", file=str(f.path), error=str(exc))
