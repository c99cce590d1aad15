"""One accepted connection: read the opening line (capped in size and time), build the type's server machine,
run its handler inside the connection's own nursery, close."""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.server.handlers.context import LiveConnection, ServerContext
from vmproto.server.handlers.gui import handle_gui_command, handle_manager_command, not_need_aes
from vmproto.server.handlers.handshake import OTHER_KEY_BITS, SERVICE_KEY_BITS
from vmproto.server.handlers.io import RECV_SIZE, MachineStream, PeerGone
from vmproto.server.handlers.keycheck import handle_keycheck
from vmproto.server.handlers.packetbuffer import handle_packetbuffer
from vmproto.server.handlers.query import handle_query
from vmproto.server.handlers.response import handle_response, handle_responses
from vmproto.server.handlers.service import handle_service
from vmproto.server.handlers.store import handle_store
from vmproto.wire.acceptor import Acceptor
from vmproto.wire.compression import Compression
from vmproto.wire.connection import DEFAULT_OPENING_MAX
from vmproto.wire.errors import ProtocolError, RemoteProtocolError
from vmproto.wire.opening import Opening
from vmproto.wire.response import ResponseServer

__all__ = ["handle_connection", "HANDSHAKE_HANDLERS"]

log = logging.getLogger("vmproto.server")

HANDSHAKE_HANDLERS = {
    "service": handle_service,
    "store": handle_store,
    "query": handle_query,
    "packetbuffer block": handle_packetbuffer,
    "responses": handle_responses,
    "keycheck": handle_keycheck,
}


async def handle_connection(ctx: ServerContext, stream: trio.SocketStream, peer: tuple[str, int]) -> None:
    """Serve one accepted connection to its end; never raises (errors are logged and the socket closed)."""
    live = LiveConnection(trio.CancelScope())
    key = ctx.next_conn_id()
    ctx.live[key] = live
    try:
        with live.scope:
            await _serve(ctx, stream, peer, live)
    finally:
        del ctx.live[key]


async def _serve(ctx: ServerContext, stream: trio.SocketStream, peer: tuple[str, int], live: LiveConnection) -> None:
    opened_ts = time.time()
    io: MachineStream | None = None
    try:
        got = await _read_opening(ctx, stream, peer)
        if got is None:
            return
        opening, raw = got
        ctype = opening.type_connection
        ctx.stats.connections[ctype] += 1
        live.type = ctype
        ctx.log_connection(peer[0], logging.DEBUG if ctype in ("query", "response") else logging.INFO,
                           "connection accepted", type=ctype, peer=f"{peer[0]}:{peer[1]}")
        async with trio.open_nursery() as nursery:
            rsa_key = None
            if ctype in HANDSHAKE_HANDLERS:
                rsa_key = await ctx.keypool.get(SERVICE_KEY_BITS if ctype == "service" else OTHER_KEY_BITS)
            machine = _build(ctx, ctype, opening, raw, rsa_key)
            io = MachineStream(ctx, stream, machine, peer=peer, conn_id=id(live),
                               write_timeout=float(ctx.opt("server_write_timeout_s", 60)))
            live.io = io
            if ctype == "response":
                io.feed(raw)  # the machine reads the line itself so that no stream byte is skipped (spec §1.5)
            if ctype not in ("gui_command", "manager_command"):
                io.start(nursery)
            try:
                if ctype in HANDSHAKE_HANDLERS:
                    await HANDSHAKE_HANDLERS[ctype](ctx, io, rsa_key, opened_ts)
                elif ctype == "response":
                    await handle_response(ctx, io)
                elif ctype == "gui_command":
                    await handle_gui_command(ctx, io)
                else:
                    await handle_manager_command(ctx, io)
            finally:
                nursery.cancel_scope.cancel()
        ctx.log_connection(peer[0], logging.DEBUG if ctype in ("query", "response") else logging.INFO,
                           "connection closed", type=ctype, peer=f"{peer[0]}:{peer[1]}",
                           seconds=round(time.time() - opened_ts, 3))
    except (RemoteProtocolError, PeerGone) as exc:
        ctx.log_hostile(peer[0], "connection dropped", port=peer[1], reason=str(exc))
    except ProtocolError as exc:  # our own misuse of a machine: a bug, but one connection must not kill the server
        log_event(log, logging.ERROR, "connection failed", peer=f"{peer[0]}:{peer[1]}", error=repr(exc))
    finally:
        if io is not None:
            await io.aclose()
        else:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


async def _read_opening(ctx: ServerContext, stream: trio.SocketStream,
                        peer: tuple[str, int]) -> tuple[Opening, bytes] | None:
    """Return (opening, every byte read so far), or None after logging why the connection is dropped silently."""
    timeout = float(ctx.opt("server_opening_line_timeout_s", 30))
    max_size = int(ctx.opt("server_opening_line_max", DEFAULT_OPENING_MAX))
    acceptor = Acceptor(max_size=max_size, timeout=timeout, manager_key=ctx.manager_key)
    raw = bytearray()
    reason = "opening line timeout"
    with trio.move_on_after(timeout):
        try:
            while True:
                data = await stream.receive_some(RECV_SIZE)
                now = time.time()
                acceptor.receive_data(data, now)
                if len(raw) < 2 * max_size:
                    raw += data
                opening = acceptor.next_opening(now)
                if opening is not None:
                    return opening, bytes(raw)
        except RemoteProtocolError as exc:
            reason = exc.reason
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = f"read failed: {exc!r}"
    ctx.stats.refused[reason] += 1
    ctx.log_hostile(peer[0], "connection closed before dispatch", port=peer[1], reason=reason)
    return None


def _build(ctx: ServerContext, ctype: str, opening: Opening, raw: bytes, rsa_key: Any):
    cfg = ctx.cfg
    caps = {"max_block_payload": int(ctx.opt("server_max_block_size", 64 * 1024 * 1024))}
    if ctype == "response":
        return ResponseServer(skip_remainder_crlf=False, **caps)
    acceptor = Acceptor(manager_key=ctx.manager_key)
    utc_offset = time.localtime().tm_gmtoff
    if ctype in HANDSHAKE_HANDLERS:
        caps.update(rsa_key=rsa_key, password=str(cfg.get("server_password", "")))
    if ctype == "service":
        caps.update(server_sensor_id=int(cfg.get("id_sensor", -1)),
                     require_new_store_version=bool(cfg.get("mysql_enable_new_store", 0))
                     or bool(cfg.get("mysql_enable_set_id", False)),
                     server_type_compress=int(cfg.get("server_type_compress", Compression.ZSTD)))
    elif ctype == "store":
        caps.update(utc_offset=utc_offset)
    elif ctype == "packetbuffer block":
        caps.update(connect_max_time_diff=int(cfg.get("client_server_connect_maximum_time_diff_s", 2)),
                    block_max_time_diff=int(cfg.get("receive_packetbuffer_maximum_time_diff_s", 30)),
                    max_container_size=10 * 1024 * int(cfg.get("packetbuffer_block_maxsize", 1024)),
                    utc_offset=utc_offset)
    elif ctype == "gui_command":
        caps.update(not_need_aes=not_need_aes,
                    manager_enable_unencrypted=bool(cfg.get("manager_enable_unencrypted", False)))
    return acceptor.build(opening, **caps)
