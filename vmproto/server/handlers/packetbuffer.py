"""`packetbuffer block` connections (spec §9): validated containers are confirmed, deduplicated and handed to the
`PacketSink`. The machine runs the reference's checks in order (with their reply texts) and the per-connection
counter logic; this handler adds the cross-connection dedup of §9.9 and the decoding after the reply (§9.8)."""

from __future__ import annotations

import hashlib
import logging

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
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.PacketbufferBlock):
                ctx.stats.blocks_in["packetbuffer block"] += 1
                await _block(ctx, io, item, sensor, identity, method)
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


async def _block(ctx: ServerContext, io: MachineStream, block: ev.PacketbufferBlock, sensor: SensorIdentity,
                 identity: str, method: PbCompression) -> None:
    digest = hashlib.sha256(block.payload[CONTAINER_HEADER_SIZE:]).digest()
    seen = ctx.pb_last.get(identity)
    duplicate = block.duplicate or seen == (block.counter, digest)
    if not duplicate:
        ctx.pb_last[identity] = (block.counter, digest)
    # The reply covers framing, header, checksum, offsets and time — not decompression (spec §9.8/§9.9).
    if block.require_confirmation:
        await io.send(ev.BlockReply())
    if duplicate:
        ctx.stats.pb_duplicates += 1
        log.debug("pb: duplicate block counter=%d from %s dropped", block.counter, identity)
        return
    ctx.stats.pb_blocks += 1
    try:
        container = decode_with_fallback(block.payload, method)
    except ProtocolError as exc:
        ctx.stats.pb_undecodable += 1
        log_event(log, logging.ERROR, "error in receiving packets from client", peer=io.peer[0],
                  error=f"undecodable block: {exc}", counter=block.counter)
        return
    try:
        ctx.stats.pb_packets += await ctx.sink.accept(sensor, container)
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
