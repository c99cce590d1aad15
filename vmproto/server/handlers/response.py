"""`response` and `responses` connections (spec §11): a sensor returns a GUI task's output; we relay it."""

from __future__ import annotations

import logging
import time

from vmproto.keylog import connection_entry
from vmproto.logs import log_event
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.server.handlers.service import EndService
from vmproto.server.registry import GuiTask, TaskOutput
from vmproto.wire import events as ev
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.response import UNKNOWN_TASK_ID, ResponseServer

__all__ = ["handle_response", "handle_responses"]

log = logging.getLogger("vmproto.server")

_RELOAD_COMMANDS = ("set_json_config", "hot_restart")


async def handle_response(ctx: ServerContext, io: MachineStream) -> None:
    """Relay one `response` stream to the waiting GUI. Unknown task or no service keys: close silently."""
    machine = io.machine
    assert isinstance(machine, ResponseServer)
    opening = await io.next_event()  # the OpenConnection the machine read from the bytes we fed it
    if not isinstance(opening, ev.OpenConnection):
        return
    task = ctx.registry.find_task(machine.gui_task_id)
    service = ctx.registry.find_service(str(task.sensor_id)) if task is not None else None
    if task is None or service is None or task.started:
        ctx.log_hostile(io.peer[0], "response for unknown task", task=machine.gui_task_id[:40])
        return
    task.started = True
    if ctx.keylog is not None:
        # The stream is encrypted with the sensor's service keys: log them under this connection too, so the
        # inspector decodes the relay without guessing which service it belongs to.
        try:
            ctx.keylog.write(connection_entry(
                conn=io.peer[1], type_connection="response", opened_ts=time.time(), aes_ckey=service.aes_ckey,
                aes_ivec=service.aes_ivec, peer=f"{io.peer[0]}:{io.peer[1]}", role="server"))
        except (OSError, ValueError) as exc:
            log_event(log, logging.ERROR, "key log write failed", error=str(exc))
    try:
        await io.send(ev.ResponseKeys(service.aes_ckey, service.aes_ivec))
    except Exception as exc:  # noqa: BLE001 - bad service keys (shorter than 16 bytes) end only this relay
        log_event(log, logging.WARNING, "response keys unusable", task=task.task_id, error=repr(exc))
        return
    first = b""
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.ResponseData):
                if not first:
                    first = item.data[:8]
                if not await task.deliver(TaskOutput("data", item.data)):
                    return  # the GUI is gone
            elif isinstance(item, ev.ResponseEnd | ev.ConnectionClosed | Shutdown):
                break
    except RemoteProtocolError as exc:
        # Bad final padding or a broken stream: the GUI keeps what was decrypted (spec §11.1 step 3).
        log_event(log, logging.WARNING, "failed aes decrypt", task=task.task_id, reason=exc.reason)
    except PeerGone:
        pass
    await task.deliver(TaskOutput("end"))
    task.completed = True
    _after_reload(ctx, task, first)


async def handle_responses(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Serve one `responses` connection: `<task_id>#<output>` items, each relayed raw to its GUI."""
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.Credentials):
        return
    await io.send(ev.HandshakeOK())
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.ResponseItem):
                ctx.stats.blocks_in["responses"] += 1
                task = ctx.registry.find_task(item.task_id)
                if task is None or task.started:
                    await io.send(ev.ResponseReply(UNKNOWN_TASK_ID))
                    continue
                task.started = True
                if await task.deliver(TaskOutput("raw", item.output)):
                    task.completed = True
                    await io.send(ev.ResponseReply("OK"))
                    _after_reload(ctx, task, item.output[:8])
                # GUI write failed: the reference answers nothing; the sensor times out and moves on.
            elif isinstance(item, ev.Rejected):
                if item.reply is not None:
                    await io.send(ev.ResponseReply(item.reply))
            elif isinstance(item, ev.ConnectionClosed | Shutdown):
                return
    except RemoteProtocolError as exc:
        ctx.log_hostile(io.peer[0], "responses connection error", port=io.peer[1], reason=exc.reason)
    except PeerGone:
        pass


def _after_reload(ctx: ServerContext, task: GuiTask, first: bytes) -> None:
    # spec §7.11: a configuration reload that answered ok ends the sensor's service; the sensor reconnects.
    if task.command.lower().startswith(_RELOAD_COMMANDS) and first[:2].lower() == b"ok":
        service = ctx.registry.find_service(str(task.sensor_id))
        if service is not None:
            service.push(EndService())
