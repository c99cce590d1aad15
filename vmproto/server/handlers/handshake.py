"""The server side of the generic RSA/AES handshake (spec §6) for the handlers, plus the key log entry."""

from __future__ import annotations

import logging
from typing import Any

from cryptography.hazmat.primitives import serialization

from vmproto.keylog import connection_entry
from vmproto.logs import log_event
from vmproto.server.handlers.io import MachineStream
from vmproto.wire import events as ev
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.handshake import HandshakeServer

__all__ = ["SERVICE_KEY_BITS", "OTHER_KEY_BITS", "run_handshake"]

log = logging.getLogger("vmproto.server")

SERVICE_KEY_BITS = 4096  # spec §7.1: the reference's service key
OTHER_KEY_BITS = 2048  # spec §6.2: query, store, packetbuffer block, responses, keycheck


async def run_handshake(io: MachineStream, rsa_key: Any, opened_ts: float) -> ev.Event | None:
    """Send the RSA key and read the credentials. Returns the credentials event (the machine checked the password
    and the type's own rules), or None when the handshake failed (the prescribed reply was written, the failure
    logged; the caller closes). Writes the key log entry either way when a key log is configured.
    """
    machine = io.machine
    assert isinstance(machine, HandshakeServer)
    ctx = io.ctx
    creds: ev.Event | None = None
    try:
        await io.send(ev.RsaKey(machine.public_pem))
        item = await io.next_event()
        while isinstance(item, ev.OpenConnection):  # queued when the machine took the opening line
            item = await io.next_event()
        if not isinstance(item, ev.Event):  # only the shutdown notice can come this early
            return None
        if isinstance(item, ev.ConnectionClosed):
            ctx.stats.handshakes[(io.type, "closed")] += 1
            log_event(log, logging.INFO, "handshake aborted", type=io.type, peer=_peer(io), reason=item.reason)
            return None
        creds = item
        ctx.stats.handshakes[(io.type, "ok")] += 1
        return creds
    except RemoteProtocolError as exc:
        ctx.stats.handshakes[(io.type, exc.reason)] += 1
        ctx.log_hostile(io.peer[0], "handshake refused", type=io.type, port=io.peer[1], reason=exc.reason)
        return None
    finally:
        if ctx.keylog is not None:
            _write_keylog(io, rsa_key, opened_ts, creds)


def _write_keylog(io: MachineStream, rsa_key: Any, opened_ts: float, creds: ev.Event | None) -> None:
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    machine = io.machine
    assert isinstance(machine, HandshakeServer)
    entry = connection_entry(
        conn=io.peer[1], type_connection=io.type, opened_ts=opened_ts,
        aes_ckey=getattr(creds, "aes_ckey", None), aes_ivec=getattr(creds, "aes_ivec", None),
        rsa_modulus_bits=rsa_key.key_size, server_rsa_public_key_pem=machine.public_pem.decode("ascii"),
        server_rsa_private_key_pem=pem, peer=f"{io.peer[0]}:{io.peer[1]}", role="server",
    )
    assert io.ctx.keylog is not None
    try:
        io.ctx.keylog.write(entry)
    except (OSError, ValueError) as exc:
        log_event(log, logging.ERROR, "key log write failed", error=str(exc))


def _peer(io: MachineStream) -> str:
    return f"{io.peer[0]}:{io.peer[1]}"
