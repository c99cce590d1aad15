"""`store` connections (spec §8): admission, strict parsing, ack only after COMMIT (§8.9), dedup by scope.

Per message: `check` → `OK` or the queue-full JSON; a data message while the id_main's writer queue is at
`server_sql_queue_limit` (or the database is down) → queue-full JSON, message discarded; otherwise the message
goes to its id_main's writer and `OK` is sent once the writer committed it (or found it applied before). If the
commit has not happened within `store_ack_deadline` seconds the sensor gets the queue-full JSON while the
transaction carries on; its resend is then resolved by the dedup record (applied once either way). A message the
writer rolled back as a whole (deadlock after the writer's own retries, lock wait, missing privilege, failed COMMIT,
database gone) also gets the queue-full JSON, never `OK`; a permanent error of one unit drops that unit only and the
message is acknowledged.
A malformed message closes the connection without a reply (spec §8.6).
"""

from __future__ import annotations

import logging
import secrets
import time

import trio

from vmproto.logs import log_event
from vmproto.server.db.errors import ConnectionLostError, DatabaseError, StoreMessageError
from vmproto.server.db.store import StoreMessage, is_transient
from vmproto.server.handlers.context import ServerContext, TooManyWriters, dedup_scope
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.wire import events as ev
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.store_msg import queue_full_usleep

__all__ = ["handle_store", "DEFAULT_ACK_DEADLINE"]

log = logging.getLogger("vmproto.server")

DEFAULT_ACK_DEADLINE = 120.0  # spec §8.9 step 7; must stay below the sensor's 300 s reply timeout
QUEUE_FULL = "sql queue is full"


async def handle_store(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Run one store connection to its end."""
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.Credentials):
        return
    simple = bool(ctx.cfg.get("server_cp_store_simple_connect_response", False))
    await io.send(ev.StoreAccepted(check_store=not simple, check_time=not simple))
    scope = dedup_scope(io.peer[0], str(ctx.opt("store_dedup_scope", "address")))
    deadline = float(ctx.opt("store_ack_deadline", DEFAULT_ACK_DEADLINE))
    peer = f"{io.peer[0]}:{io.peer[1]}"
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.StoreCheck):
                ctx.stats.blocks_in["store"] += 1
                await io.send(ev.StoreOK() if _admitting(ctx, None) else _queue_full(ctx))
            elif isinstance(item, ev.StoreQueries):
                ctx.stats.blocks_in["store"] += 1
                await io.send(await _apply(ctx, item.message, scope, deadline, peer))
            elif isinstance(item, ev.Rejected):
                # Strict grammar (spec §8.6): the whole message is refused, no reply, connection closed.
                ctx.stats.protocol_errors["store"] += 1
                ctx.log_hostile(io.peer[0], "bad store message", port=io.peer[1], reason=item.reason,
                                head=item.payload[:64])
                return
            elif isinstance(item, ev.ConnectionClosed | Shutdown):
                return
    except RemoteProtocolError as exc:
        ctx.log_hostile(io.peer[0], "store connection error", port=io.peer[1], reason=exc.reason)
    except PeerGone:
        pass


def _admitting(ctx: ServerContext, id_main: int | None) -> bool:
    if ctx.writers is None or not ctx.db_ready:
        return False
    if id_main is None:
        return all(not w.is_full for w in ctx.writers.writers.values())
    writer = ctx.writers.writers.get(id_main)
    return writer is None or not writer.is_full


def _queue_full(ctx: ServerContext) -> ev.StoreError:
    ctx.stats.store_queue_full += 1
    sleep_ms = int(ctx.cfg.get("client_server_sleep_ms_if_queue_is_full", 1000))
    return ev.StoreError(QUEUE_FULL, usleep=queue_full_usleep(sleep_ms, secrets.randbelow(100)), quietly=True,
                         keep_connect=True)


async def _apply(ctx: ServerContext, message: object, scope: int, deadline: float, peer: str) -> ev.Event:
    """Commit one message; return the reply to send (StoreOK or the queue-full StoreError)."""
    id_main = message.id_main  # type: ignore[attr-defined]
    if not _admitting(ctx, id_main):
        return _queue_full(ctx)
    try:
        writer = ctx.writers.get(id_main)  # type: ignore[union-attr]
        db_message = StoreMessage.from_wire(message, scope)  # type: ignore[arg-type]
    except TooManyWriters as exc:
        log_event(log, logging.ERROR, "store message refused", id_main=id_main, peer=peer, reason=str(exc))
        return _queue_full(ctx)
    except StoreMessageError as exc:
        # Nothing executable (empty SQL, ids out of range): acknowledge, as the reference would, and log.
        log_event(log, logging.WARNING, "store message ignored", id_main=id_main, peer=peer, reason=exc.message)
        ctx.stats.store_acked += 1
        return ev.StoreOK()
    ctx.stats.store_queued += 1
    started = time.monotonic()
    with trio.move_on_after(deadline) as timer:
        try:
            result = await writer.submit(db_message)
        except DatabaseError as exc:
            if isinstance(exc, ConnectionLostError) or is_transient(exc):
                # Rolled back as a whole (deadlock, lock wait, missing privilege, failed COMMIT, database gone):
                # the sensor resends after usleep, `check` first (spec §8.9 step 5).
                ctx.stats.count_db_error(exc)
                log_event(log, logging.ERROR, "store message not applied", id_main=id_main, peer=peer,
                          errno=exc.errno, reason=exc.message)
                return _queue_full(ctx)
            # A permanent SQL error: resending cannot help, so the message is acknowledged and logged, as the
            # reference does (it acknowledges before executing).
            ctx.stats.count_db_error(exc)
            ctx.stats.store_failed += 1
            ctx.stats.store_acked += 1
            log_event(log, logging.ERROR, "store statement failed", id_main=id_main, peer=peer, errno=exc.errno,
                      error=exc.message)
            return ev.StoreOK()
    if timer.cancelled_caught:
        # The transaction carries on in the writer; the sensor retries after usleep and the dedup record makes
        # the resend a no-op if it committed meanwhile (spec §8.9 step 7).
        log_event(log, logging.WARNING, "store ack deadline passed", id_main=id_main, peer=peer,
                  seconds=round(time.monotonic() - started, 1))
        return _queue_full(ctx)
    if result.applied:
        ctx.stats.store_committed += 1
        ctx.stats.store_failed += len(getattr(result, "failed", ()))  # units rolled back alone (logged by the writer)
        ctx.stats.store_rows += len(db_message.queries)
    else:
        ctx.stats.store_duplicates += 1
        log.debug("store: duplicate message id_main=%d from %s skipped", id_main, peer)
    ctx.stats.store_acked += 1
    return ev.StoreOK()
