"""Packet mirroring (`packetbuffer_sender = yes`, spec §9): raw captured packets, before any analysis, shipped to
the central in pcap_block_store v7 containers over one `packetbuffer block` connection.

    mirror = MirrorSender(connector, session, MirrorOptions(...))
    nursery.start_soon(mirror.run)
    mirror.add_batch(batch)          # PacketBatch from the capture; never blocks: drops are counted by reason

Blocks close at `block_maxsize` bytes of data area or `block_maxtime` seconds. Each closed block gets the next
counter and waits in a bounded memory buffer (optionally overflowing to files in `spool_dir`). The sender writes the
oldest block; with confirmation it waits for `OK` and on anything else resends the same bytes (same counter,
fresh `time_s`) on a new connection (spec §9.10). Back-pressure as the reference: confirmation is dropped for a
block while the buffer is > 30 % full and the last confirmation took > 20 ms; `time_s` is zeroed when confirmation
is off or the buffer is > 70 % full.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import trio

from vmproto.logs import log_event
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.sensor.capture.frames import U32, FrameList
from vmproto.sensor.client.connector import Connector, open_channel
from vmproto.sensor.client.errors import ChannelLost, ClientError, ConnectFailed, HandshakeRefused
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.pktinfo import AreaPacker
from vmproto.sensor.client.session import SessionState
from vmproto.sensor.client.timings import jittered, pb_retry_delay
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.compression import PbCompression
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.packetbuffer import PacketbufferClient
from vmproto.wire.pbstore import CONTAINER_HEADER_SIZE, encode_area

__all__ = ["MirrorOptions", "MirrorSender", "MirrorStats", "DROP_REASONS"]

log = logging.getLogger("vmproto.sensor.client.mirror")

DROP_REASONS = ("no_ip", "too_big", "buffer_full", "disk_full", "disk_error", "rejected")
_CONFIRM_AT, _TIME_AT = 56, 60
_BAD_HEADER_ATTEMPTS = 10
_SLOW_CONFIRM = 0.020


@dataclass(frozen=True, slots=True)
class MirrorOptions:
    """Sender settings (config names in brackets)."""

    ifname: str = "read_from"  # capture interface, `read_from` for file input (spec §9.11)
    compress: PbCompression | None = PbCompression.SNAPPY  # [packetbuffer_compress(_method)]
    checksum: bool = True  # [mirror_use_checksum]
    require_confirmation: bool = True  # [mirror_require_confirmation]
    block_maxsize: int = 1024 * 1024  # [packetbuffer_block_maxsize] KiB → bytes
    block_maxtime: float = 0.1  # [packetbuffer_block_maxtime] ms → s
    buffer_max_bytes: int = 256 * 1024 * 1024  # [max_buffer_mem] MB → bytes
    spool_dir: str = ""  # [packetbuffer_file_path] disk overflow, "" = none
    spool_max_bytes: int = 0  # [packetbuffer_file_totalmaxsize] MB → bytes

    def __post_init__(self) -> None:
        if self.block_maxsize < 1024 or self.buffer_max_bytes < self.block_maxsize:
            raise ClientError("packetbuffer_block_maxsize must be >= 1 KiB and fit in the buffer")
        if len(self.ifname.encode("latin-1", "replace")) > 9:
            raise ClientError(f"interface name {self.ifname!r} longer than 9 bytes")


@dataclass
class MirrorStats:
    """Counters; `dropped` has one entry per reason in DROP_REASONS (packets)."""

    packets_in: int = 0
    packets_queued: int = 0
    packets_sent: int = 0
    bytes_in: int = 0  # captured bytes of the packets taken
    blocks_built: int = 0
    blocks_sent: int = 0
    blocks_confirmed: int = 0
    blocks_resent: int = 0
    blocks_spooled: int = 0
    confirmations_skipped: int = 0
    connections: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


@dataclass
class _Block:
    counter: int
    packets: int
    data: bytes | None  # in memory
    path: Path | None = None  # spooled to disk
    size: int = 0


class MirrorSender:
    """One sensor's mirroring pipeline: block builder, bounded buffer, sender task."""

    def __init__(self, connector: Connector, session: SessionState, options: MirrorOptions | None = None) -> None:
        self.connector = connector
        self.session = session
        self.options = options or MirrorOptions()
        self.stats = MirrorStats()
        self._packer = AreaPacker(self.options.block_maxsize)
        self._builder_since = 0.0
        self._dlink = 1
        self._counter = 0
        self._queue: collections.deque[_Block] = collections.deque()
        self._memory_bytes = 0
        self._spool_bytes = 0
        self._wakeup = trio.Event()
        self._last_confirm = 0.0
        # The next block, encrypted while the central validates the current one: (block, payload, confirm).
        self._prepared: tuple[_Block, bytes, bool] | None = None
        if self.options.spool_dir:
            Path(self.options.spool_dir).mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------------------------------------ intake
    @property
    def fill(self) -> float:
        """Memory buffer fill ratio 0..1 (the reference's packet buffer usage)."""
        return self._memory_bytes / self.options.buffer_max_bytes

    @property
    def queued_blocks(self) -> int:
        return len(self._queue)

    def add_batch(self, batch: PacketBatch) -> None:
        """Take the frames of one capture batch. Never blocks; anything not shipped is counted in `stats.dropped`.

        Raises ValueError when the batch's columns differ in length.
        """
        frames = batch.frames
        n = len(frames)
        if len(batch.ts_ns) != n or len(batch.orig_len) != n:
            raise ValueError(f"batch columns differ in length: {n} frames, {len(batch.ts_ns)} times, "
                             f"{len(batch.orig_len)} lengths")
        packer = self._packer
        if packer.count and batch.linktype != self._dlink:
            self._close_block()  # one link type per container
        self._dlink = batch.linktype
        if not n:
            return
        if not isinstance(frames, FrameList):
            frames = FrameList.from_frames(frames)
        ts_ns = array("q", batch.ts_ns)
        orig_len = array(U32, batch.orig_len)
        before = packer.totals
        i = 0
        while i < n:
            if not packer.count:
                self._builder_since = time.monotonic()
            i = packer.pack(batch.linktype, frames, ts_ns, orig_len, i)
            if packer.full:
                self._close_block()
        seen, no_ip, too_big, taken = (a - b for a, b in zip(packer.totals, before, strict=True))
        stats = self.stats
        stats.packets_in += seen
        stats.bytes_in += taken
        stats.dropped["no_ip"] += no_ip
        stats.dropped["too_big"] += too_big

    def flush(self) -> None:
        """Close the open block now (end of input, shutdown)."""
        if self._packer.count:
            self._close_block()

    def _close_block(self) -> None:
        packer = self._packer
        if not packer.count:
            return
        self._counter = self._counter % 0xFFFFFFFF + 1
        ident = self.session.identity
        area, offsets = packer.take()
        try:
            data = encode_area(area, offsets, counter=self._counter, time_s=0, sensor_id=ident.id_sensor,
                               dlink=self._dlink, ifname=self.options.ifname,
                               require_confirmation=self.options.require_confirmation,
                               compress=self.options.compress, checksum=self.options.checksum)
        finally:
            area.release()  # the packer reuses its buffer
        self.stats.blocks_built += 1
        block = _Block(self._counter, len(offsets), None, size=len(data))
        if self._memory_bytes + len(data) <= self.options.buffer_max_bytes:
            block.data = data
            self._memory_bytes += len(data)
        elif not self._spool(block, data):
            return
        self._queue.append(block)
        self.stats.packets_queued += block.packets
        self._wakeup.set()

    def _spool(self, block: _Block, data: bytes) -> bool:
        opts = self.options
        if not opts.spool_dir:
            self.stats.dropped["buffer_full"] += block.packets
            return False
        if self._spool_bytes + len(data) > opts.spool_max_bytes:
            self.stats.dropped["disk_full"] += block.packets
            return False
        path = Path(opts.spool_dir) / f"block-{os.getpid()}-{block.counter:010d}.pbs"
        try:
            path.write_bytes(data)
        except OSError as exc:
            self.stats.dropped["disk_error"] += block.packets
            log_event(log, logging.ERROR, "mirror spool write failed", path=str(path), error=exc.strerror)
            return False
        block.path = path
        self._spool_bytes += len(data)
        self.stats.blocks_spooled += 1
        return True

    # ------------------------------------------------------------------------------------------------ sending
    async def run(self) -> None:
        """Close blocks on `block_maxtime` and send them, forever (until cancelled)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._block_timer)
            await self._send_loop()

    async def _block_timer(self) -> None:
        maxtime = self.options.block_maxtime
        while True:
            await trio.sleep(maxtime / 2)
            if self._packer.count and time.monotonic() - self._builder_since >= maxtime:
                self._close_block()

    async def wait_sent(self) -> None:
        """Return once every block built so far has left the buffer (tests, benchmarks, shutdown)."""
        while self._queue:
            await trio.sleep(0.005)

    def _load(self, block: _Block) -> bytes:
        if block.data is not None:
            return block.data
        assert block.path is not None
        return block.path.read_bytes()

    def _release(self, block: _Block) -> None:
        self._queue.popleft()
        if block.data is not None:
            self._memory_bytes -= block.size
        elif block.path is not None:
            self._spool_bytes -= block.size
            try:
                block.path.unlink()
            except OSError:
                pass

    async def _connect(self) -> MachineStream:
        ident = self.session.identity
        ckey, ivec = generate_aes_strings()
        machine = PacketbufferClient()
        creds = ev.PacketbufferCredentials(ident.password, ckey, ivec, time.strftime("%Y-%m-%d %H:%M:%S"),
                                           ident.id_sensor, ident.name)
        ms, _ok, _conn = await open_channel(self.connector, machine, creds, ev.HandshakeOK)
        machine.set_timeout(State.REPLY, self.connector.timings.reply_timeout)
        self.stats.connections += 1
        return ms

    async def _send_loop(self) -> None:
        t = self.connector.timings
        ms: MachineStream | None = None
        attempt = 0
        bad_header_left: int | None = None
        try:
            while True:
                while not self._queue:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                if ms is None:
                    try:
                        ms = await self._connect()
                    except (ConnectFailed, HandshakeRefused, ChannelLost) as exc:
                        attempt += 1
                        self.connector.log_failure("packetbuffer block", exc)
                        await trio.sleep(jittered(pb_retry_delay(t, attempt), t.jitter))
                        continue
                block = self._queue[0]
                try:
                    payload, confirm = self._payload(block, ms)
                except OSError as exc:
                    self.stats.dropped["disk_error"] += block.packets
                    log_event(log, logging.ERROR, "mirror spool read failed", error=exc.strerror)
                    self._release(block)
                    continue
                if not confirm and self.options.require_confirmation:
                    self.stats.confirmations_skipped += 1
                if attempt:
                    self.stats.blocks_resent += 1
                try:
                    started = time.monotonic()
                    await ms.send(ev.PacketbufferBlock(payload))
                    self.stats.blocks_sent += 1
                    if confirm:
                        # While the central validates this block, encrypt the next one (spec §9.10 keeps the
                        # next send waiting for this OK; nothing stops us from getting it ready).
                        self._prepare_next(ms)
                        reply = await ms.expect(ev.BlockReply)
                        self._last_confirm = time.monotonic() - started
                    else:
                        reply = ev.BlockReply("OK")
                except ChannelLost as exc:
                    attempt += 1
                    log_event(log, logging.WARNING, "send packetbuffer block error", error=str(exc))
                    await ms.aclose()
                    ms = None
                    await trio.sleep(jittered(pb_retry_delay(t, attempt), t.jitter))
                    continue
                if reply.ok:
                    if confirm:
                        self.stats.blocks_confirmed += 1
                    self.stats.packets_sent += block.packets
                    self._release(block)
                    attempt, bad_header_left = 0, None
                    continue
                attempt += 1
                log_event(log, logging.WARNING, "send packetbuffer block error",
                          error=f"bad response - {reply.text}", counter=block.counter)
                if "bad header" in reply.text:
                    bad_header_left = _BAD_HEADER_ATTEMPTS if bad_header_left is None else bad_header_left - 1
                    if bad_header_left <= 0:
                        self.stats.dropped["rejected"] += block.packets
                        self._release(block)
                        attempt, bad_header_left = 0, None
                await ms.aclose()
                ms = None
                await trio.sleep(jittered(pb_retry_delay(t, attempt), t.jitter))
        finally:
            if ms is not None:
                await ms.aclose()

    def _decision(self) -> tuple[bool, int]:
        """(require_confirmation, time_s) for a block sent now: back-pressure as the reference (spec §9.10)."""
        fill = self.fill
        confirm = self.options.require_confirmation
        if confirm and fill > 0.30 and self._last_confirm > _SLOW_CONFIRM:
            confirm = False
        time_s = int(time.time()) & 0xFFFFFFFF if confirm and fill <= 0.70 else 0
        return confirm, time_s

    def _decide(self, header: bytearray) -> bool:
        """Decide for a block sent now and write the decision into its 64-byte `header`; return the
        confirmation flag."""
        confirm, time_s = self._decision()
        _write_decision(header, confirm, time_s)
        return confirm

    def _stamp(self, block: _Block, confirm: bool, time_s: int) -> bytes:
        """The container as sent: require_confirmation and time_s set in the header. Bytes after 64 never change,
        so the checksum and the central's dedup digest stay valid (spec §9.10)."""
        data = self._load(block)
        head = bytearray(data[:CONTAINER_HEADER_SIZE])
        _write_decision(head, confirm, time_s)
        return b"".join((head, memoryview(data)[CONTAINER_HEADER_SIZE:]))

    def _payload(self, block: _Block, ms: MachineStream) -> tuple[bytes, bool]:
        """The payload to send for `block` on `ms` now and its confirmation flag: the prepared one when it was
        made for this block and the decision still holds (time_s within a second), else a fresh one.
        Raises OSError when a spooled block cannot be read."""
        confirm, time_s = self._decision()
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is block and prepared[2] == confirm:
            payload = prepared[1]
            sent_time = struct.unpack_from("<I", payload, _TIME_AT)[0]
            if (sent_time == 0) == (time_s == 0) and abs(sent_time - time_s) <= 1:
                return payload, confirm
        return self._stamp(block, confirm, time_s), confirm

    def _prepare_next(self, ms: MachineStream) -> None:
        """Stamp and encrypt the block after the one in flight, predicting the decision it will get."""
        if len(self._queue) < 2:
            return
        block = self._queue[1]
        confirm, time_s = self._decision()
        try:
            payload = self._stamp(block, confirm, time_s)
        except OSError:
            return  # the send path reads it again and reports the error
        prepare = getattr(ms.machine, "prepare", None)
        if prepare is not None:
            prepare(payload)
        self._prepared = (block, payload, confirm)


def _write_decision(header: bytearray, confirm: bool, time_s: int) -> None:
    header[_CONFIRM_AT] = 1 if confirm else 0
    struct.pack_into("<I", header, _TIME_AT, time_s & 0xFFFFFFFF)
