"""`packetbuffer block` connections (spec §9): validated containers are confirmed, deduplicated and handed to the
`PacketSink`. The machine runs the reference's checks in order (with their reply texts) and the per-connection
counter logic; this handler adds the cross-connection dedup of §9.9 and the decoding after the reply (§9.8).

Pipelining: the reply goes out as soon as the machine accepted a block (it covers what the machine checked, not
the decoding, spec §9.9); digest, decompression and the sink run in a per-connection delivery task fed through a
small queue, so the next block is read and validated while the previous one is decoded and stored. The queue
bound keeps a slow sink pushing back on the sensor (TCP) instead of growing memory.
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import trio

from vmproto.logs import log_event
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.server.pbspool import SensorIdentity, SpoolError
from vmproto.wire import events as ev
from vmproto.wire.compression import PbCompression
from vmproto.wire.errors import ProtocolError, RemoteProtocolError
from vmproto.wire.pbstore import CONTAINER_HEADER_SIZE, Container, decode_container, peek_header

__all__ = ["handle_packetbuffer", "decode_with_fallback"]

log = logging.getLogger("vmproto.server")

_DELIVERY_QUEUE = 2  # accepted blocks waiting for decode + sink, per connection


class _Accepted(NamedTuple):
    payload: bytes
    counter: int


async def handle_packetbuffer(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Run one packetbuffer connection to its end."""
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.PacketbufferCredentials):
        return
    await io.send(ev.HandshakeOK())
    sensor = SensorIdentity(creds.sensor_id, creds.sensor_name, io.peer[0])
    identity = str(creds.sensor_id) if creds.sensor_id > 0 else f"addr:{io.peer[0]}"
    method = PbCompression(int(ctx.cfg.get("packetbuffer_compress_method", 1)))
    log_event(log, logging.INFO, "packetbuffer connection", sensor_id=creds.sensor_id, name=creds.sensor_name,
              peer=f"{io.peer[0]}:{io.peer[1]}")
    send, receive = trio.open_memory_channel[_Accepted](_DELIVERY_QUEUE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_deliver, ctx, receive, sensor, method, io.peer[0])
        async with send:
            await _receive_blocks(ctx, io, send, identity)


async def _receive_blocks(ctx: ServerContext, io: MachineStream, queue: trio.MemorySendChannel[_Accepted],
                          identity: str) -> None:
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.PacketbufferBlock):
                ctx.stats.blocks_in["packetbuffer block"] += 1
                # The reply covers framing, header, checksum, offsets and time — not decompression (spec §9.8/§9.9),
                # and a duplicate is acknowledged like any other block.
                if item.require_confirmation:
                    await io.send(ev.BlockReply())
                # Dedup is decided here, in arrival order and before the next block is read, so a resend on
                # another connection always finds the first copy remembered (spec §9.9).
                if _duplicate(ctx, item, identity):
                    ctx.stats.pb_duplicates += 1
                    log.debug("pb: duplicate block counter=%d from %s dropped", item.counter, identity)
                    continue
                ctx.stats.pb_blocks += 1
                await queue.send(_Accepted(item.payload, item.counter))
            elif isinstance(item, ev.BlockLoss):
                ctx.log_hostile(io.peer[0], "warning in receiving packets from client", error="loss packetbuffer block",
                                previous=item.previous, counter=item.counter)
            elif isinstance(item, ev.Rejected):
                ctx.stats.pb_rejected += 1
                ctx.log_hostile(io.peer[0], "error in receiving packets from client", error=item.reason)
                if item.reply is not None:
                    await io.send(ev.BlockReply(item.reply))
            elif isinstance(item, ev.ConnectionClosed | Shutdown):
                return
    except RemoteProtocolError as exc:
        ctx.log_hostile(io.peer[0], "error in receiving packets from client", error=exc.reason)
    except PeerGone:
        pass


def _duplicate(ctx: ServerContext, block: ev.PacketbufferBlock, identity: str) -> bool:
    """True when `block` repeats the last accepted one of this sensor (same counter and SHA-256 of bytes 64…, or
    the machine's same-counter verdict); else remember it and return False."""
    digest = hashlib.sha256(memoryview(block.payload)[CONTAINER_HEADER_SIZE:]).digest()
    if block.duplicate or ctx.pb_last.get(identity) == (block.counter, digest):
        return True
    ctx.pb_last[identity] = (block.counter, digest)
    return False


def _decode(payload: bytes, method: PbCompression) -> Container | ProtocolError:
    """The decoded container, or the decode error."""
    try:
        return decode_with_fallback(payload, method)
    except ProtocolError as exc:
        return exc


async def _deliver(ctx: ServerContext, queue: trio.MemoryReceiveChannel[_Accepted], sensor: SensorIdentity,
                   method: PbCompression, peer: str) -> None:
    async with queue:
        async for block in queue:
            # Inline, not in a worker thread: with the C kernel this is ~1 ms per MiB, and a thread holding the GIL
            # for Python work makes the connection's I/O wait for the interpreter's 5 ms switch interval.
            decoded = _decode(block.payload, method)
            if isinstance(decoded, ProtocolError):
                ctx.stats.pb_undecodable += 1
                log_event(log, logging.ERROR, "error in receiving packets from client", peer=peer,
                          error=f"undecodable block: {decoded}", counter=block.counter)
                continue
            try:
                ctx.stats.pb_packets += await ctx.sink.accept(sensor, decoded)
            except SpoolError as exc:
                log_event(log, logging.ERROR, "packet sink failed", error=str(exc))


def decode_with_fallback(payload: bytes, method: PbCompression) -> Container:
    """Decode a container with the configured data-area codec, then the other one.

    The codec is not recorded in the container (spec §9.7); a sensor configured differently from us would
    otherwise lose every block. Raises RemoteProtocolError when neither decodes it (or it is malformed).
    """
    if not peek_header(payload).size_compress:
        return decode_container(payload, None)
    other = PbCompression.LZ4 if method is PbCompression.SNAPPY else PbCompression.SNAPPY
    try:
        return decode_container(payload, method)
    except RemoteProtocolError:
        return decode_container(payload, other)
