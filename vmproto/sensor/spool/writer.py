"""Per-call PCAP writer: the packets the call analysis attributes to a call, into the call's spool files.

The analysis calls `on_packet` / `on_call_closed` synchronously on the hot path; they only append to an
in-memory batch. The pipeline hands full batches over with `await flush()` (or `maybe_flush()`), and the
writer task (`run`) writes them in a worker thread. The hand-over channel holds at most `queue_batches`
batches, so a slow disk slows the pipeline down instead of growing memory: the memory held is bounded by
about (`queue_batches` + 2) x `flush_bytes`.

Files are classic pcap, microsecond time stamps, link type 101 (raw IP: the innermost IP packet, which is
what the decoder hands over for every encapsulation), readable by Wireshark and libpcap. At most
`max_open_files` files are open; the least recently used one is closed and re-opened for appending when
its call sends again.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import trio

from vmproto.logs import RateLimiter, log_event

from .index import SpoolIndex
from .layout import SpoolLayout, unit_of
from .options import RtpMode, SpoolOptions

__all__ = ["LINKTYPE_RAW", "PCAP_SNAPLEN", "SpoolStats", "SpoolWriter", "pcap_file_header"]

log = logging.getLogger("vmproto.sensor.spool")

LINKTYPE_RAW = 101
PCAP_SNAPLEN = 65535
RTP_FIXED_HEADER = 12
_MAGIC_US = 0xA1B2C3D4
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_CLOSE = -1  # ts of a "close this file" operation


def pcap_file_header(linktype: int = LINKTYPE_RAW, snaplen: int = PCAP_SNAPLEN) -> bytes:
    """The 24-byte classic pcap header (µs resolution) the spool files start with."""
    return _FILE_HEADER.pack(_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


class _CallLike(Protocol):
    call_id: str

    @property
    def fbasename(self) -> str: ...

    @property
    def calldate(self) -> int: ...


class _PacketLike(Protocol):
    ts_ns: int
    payload: bytes
    ip_packet: bytes


@dataclass(slots=True)
class SpoolStats:
    """Counters of the writer (read from the Trio thread; the worker thread only adds)."""

    packets: int = 0
    bytes: int = 0
    files_opened: int = 0
    files_closed: int = 0
    write_errors: int = 0


# One operation: (relpath, ts_ns or _CLOSE, captured bytes, original length).
_Op = tuple[str, int, bytes, int]


class SpoolWriter:
    """Writes the per-call SIP and RTP captures of spool index 0 (see the module docstring).

    Start the writer task with `await nursery.start(writer.run)`; finish with `await writer.aclose()`,
    which writes everything handed over and closes every file.
    """

    def __init__(self, options: SpoolOptions, index: SpoolIndex | None = None, *, queue_batches: int = 4,
                 max_delay: float = 1.0) -> None:
        if queue_batches < 1:
            raise ValueError("queue_batches must be at least 1")
        self.options = options
        self.layout = SpoolLayout(options.spooldirs, options.pcap_split)
        self.index = index if index is not None else SpoolIndex()
        self.stats = SpoolStats()
        self.max_delay = max_delay
        self._ops: list[_Op] = []
        self._pending = 0
        self._last_flush = -math.inf
        self._paths: dict[str, tuple[str, str, str]] = {}  # call_id -> (sip relpath, rtp relpath, unit)
        self._busy: dict[str, int] = {}  # unit -> calls open in it
        self._send, self._receive = trio.open_memory_channel[list[_Op]](queue_batches)
        self._files = _OpenFiles(self.layout.root(0), options.max_open_files, self.index, self.stats)
        self._done = trio.Event()
        self._closed = False

    # ---- hot path (synchronous, called by the call analysis) ------------------------------------------------

    def on_packet(self, call: _CallLike, pkt: _PacketLike, kind: str) -> None:
        """Queue `pkt` for the call's capture of `kind` ("sip", "rtp", "rtcp") if that kind is saved."""
        opts = self.options
        data = pkt.ip_packet
        orig = len(data)
        if kind == "sip":
            if not opts.savesip:
                return
        elif opts.savertp is RtpMode.NO:
            return
        elif kind == "rtp" and opts.savertp is RtpMode.HEADER:
            # Keep the IP and UDP headers and the fixed RTP header; the original length stays in the record.
            cut = len(data) - len(pkt.payload) + RTP_FIXED_HEADER
            if cut < len(data):
                data = data[:cut]
        paths = self._paths.get(call.call_id)
        if paths is None:
            paths = self._register(call)
        rel = paths[0] if kind == "sip" else paths[1]
        if len(data) > PCAP_SNAPLEN:
            data = data[:PCAP_SNAPLEN]
        self._ops.append((rel, pkt.ts_ns, data, orig))
        self._pending += len(data) + _RECORD.size

    def on_call_closed(self, call: _CallLike, cdr: Any = None) -> None:
        """The call's files are complete: queue their closing (after every packet queued before)."""
        paths = self._paths.pop(call.call_id, None)
        if paths is None:
            return
        sip, rtp, unit = paths
        for rel in dict.fromkeys((sip, rtp)):
            self._ops.append((rel, _CLOSE, b"", 0))
        left = self._busy.get(unit, 0) - 1
        if left > 0:
            self._busy[unit] = left
        else:
            self._busy.pop(unit, None)

    def _register(self, call: _CallLike) -> tuple[str, str, str]:
        calldate = call.calldate
        name = call.fbasename
        paths = (self.layout.call_relpath(name, calldate, "sip"), self.layout.call_relpath(name, calldate, "rtp"),
                 unit_of(calldate))
        self._paths[call.call_id] = paths
        self._busy[paths[2]] = self._busy.get(paths[2], 0) + 1
        return paths

    def busy_units(self) -> frozenset[str]:
        """Units (`YYYY-MM-DD/HH/MM`) holding files of calls still open: the cleaner leaves them alone."""
        return frozenset(self._busy)

    @property
    def open_calls(self) -> int:
        """Calls with at least one packet queued and not closed yet."""
        return len(self._paths)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued in the current batch (not handed to the writer task yet)."""
        return self._pending

    # ---- hand-over (async, called by the pipeline) ----------------------------------------------------------

    async def flush(self) -> None:
        """Hand the current batch to the writer task; waits while the writer is `queue_batches` behind."""
        self._last_flush = trio.current_time()
        if not self._ops:
            return
        batch, self._ops, self._pending = self._ops, [], 0
        await self._send.send(batch)

    async def maybe_flush(self) -> None:
        """Flush when the batch holds `flush_bytes` or is older than `max_delay` seconds."""
        if self._pending >= self.options.flush_bytes or (
                self._ops and trio.current_time() - self._last_flush >= self.max_delay):
            await self.flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: write batches in a worker thread until `aclose`; then close every file."""
        task_status.started()
        try:
            async with self._receive:
                async for batch in self._receive:
                    # Not abandoned on cancel: a half-applied batch would leave a truncated record.
                    await trio.to_thread.run_sync(self._files.apply, batch)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._files.close_all)
            self._done.set()

    async def aclose(self) -> None:
        """Write everything queued, close every file, wait for the writer task to end."""
        if not self._closed:
            self._closed = True
            if self._ops:
                batch, self._ops, self._pending = self._ops, [], 0
                await self._send.send(batch)
            await self._send.aclose()
        await self._done.wait()


class _OpenFiles:
    """The worker-thread side: open files (LRU-bounded) and the bytes written into them."""

    def __init__(self, root: Path, max_open: int, index: SpoolIndex, stats: SpoolStats) -> None:
        self.root = root
        self.max_open = max_open
        self.index = index
        self.stats = stats
        self._open: OrderedDict[str, BinaryIO] = OrderedDict()
        self._started: set[str] = set()  # relpaths whose header this run wrote (or found valid)
        self._limiter = RateLimiter(per_second=1.0, burst=5)

    def apply(self, ops: list[_Op]) -> None:
        """Write one batch of operations in order."""
        rec = _RECORD.pack
        stats = self.stats
        for rel, ts, data, orig in ops:
            if ts == _CLOSE:
                self._finish(rel)
                continue
            f = self._get(rel)
            if f is None:
                continue
            sec, ns = divmod(ts, 1_000_000_000)
            try:
                f.write(rec(sec, ns // 1000, len(data), orig))
                f.write(data)
            except OSError as exc:
                self._error("write", rel, exc)
                self._drop(rel)
                continue
            stats.packets += 1
            stats.bytes += len(data) + _RECORD.size

    def _get(self, rel: str) -> BinaryIO | None:
        f = self._open.get(rel)
        if f is not None:
            self._open.move_to_end(rel)
            return f
        while len(self._open) >= self.max_open:
            old, _ = next(iter(self._open.items()))
            self._close(old)
        path = self.root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel in self._started or _valid_header(path):
                # Reopened after an LRU eviction, or a file of an earlier call with the same name and
                # minute: append, so nothing already written is lost.
                f = open(path, "ab", buffering=65536)  # noqa: SIM115 - kept open across batches
            else:
                f = open(path, "wb", buffering=65536)  # noqa: SIM115
                f.write(pcap_file_header())
                self.stats.files_opened += 1
        except OSError as exc:
            self._error("open", rel, exc)
            return None
        self._started.add(rel)
        self._open[rel] = f
        return f

    def _close(self, rel: str) -> None:
        f = self._open.pop(rel, None)
        if f is None:
            return
        try:
            f.close()
        except OSError as exc:
            self._error("close", rel, exc)
            return
        try:
            self.index.record(0, rel, os.stat(self.root / rel).st_size)
        except OSError:
            pass

    def _finish(self, rel: str) -> None:
        if rel in self._open:
            self._close(rel)
            self.stats.files_closed += 1
        self._started.discard(rel)

    def _drop(self, rel: str) -> None:
        f = self._open.pop(rel, None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close_all(self) -> None:
        """Close every open file (end of run)."""
        for rel in list(self._open):
            self._close(rel)
            self.stats.files_closed += 1
        self._started.clear()

    def _error(self, what: str, rel: str, exc: OSError) -> None:
        self.stats.write_errors += 1
        if self._limiter.allow(what, time.monotonic()):
            log_event(log, logging.ERROR, "spool write failed", op=what, file=rel, error=exc.strerror or str(exc),
                      errors=self.stats.write_errors)


def _valid_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_FILE_HEADER.size)
    except FileNotFoundError:
        return False
    return head == pcap_file_header()
