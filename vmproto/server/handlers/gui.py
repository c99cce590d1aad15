"""`gui_command` and `manager_command` connections (spec §12.2-§12.5)."""

from __future__ import annotations

import logging
import time

import trio

from vmproto.logs import log_event
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.io import MachineStream, PeerGone, trio_deadline
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.gui import MISSING_SERVICE, NEED_AES, unknown_command

__all__ = ["handle_gui_command", "handle_manager_command", "NOT_NEED_AES"]

log = logging.getLogger("vmproto.server")

# spec §12.3: commands a GUI may send without the manager AES wrapper (first word of the command line).
NOT_NEED_AES = frozenset({
    "getversion", "getbuild", "getverbuild", "totalcalls", "printspool", "sniffer_stat", "datadir_stat",
    "disk_io_calibration", "disk_io_recalibrate", "sniffer_threads", "memory_stat", "jemalloc_stat",
    "tcmalloc_stats", "thread", "usleep", "sql_errors_skip", "heapprof_stop", "heapprof_dump", "packetbuffer_log",
    "packetbuffer_save",
})


def not_need_aes(command: str) -> bool:
    """True when `command` may run without the manager AES wrapper."""
    words = command.split(None, 1)
    return bool(words) and words[0] in NOT_NEED_AES


async def handle_gui_command(ctx: ServerContext, io: MachineStream) -> None:
    """Queue the GUI's command on its sensor's service and relay the answer (or `timeout` after 5 minutes)."""
    request = await _command_event(io, ev.GuiCommand)
    if request is None:
        return
    peer = f"{io.peer[0]}:{io.peer[1]}"
    service = ctx.registry.find_service(str(request.sensor_id))
    if service is None:
        ctx.stats.gui_tasks["no_service"] += 1
        log_event(log, logging.INFO, "gui command refused", reason="missing sniffer service", peer=peer,
                  sensor_id=request.sensor_id)
        await _send_quietly(io, ev.RawReply(MISSING_SERVICE))
        return
    if request.command == NEED_AES:
        log_event(log, logging.INFO, "Need AES for command", command=request.requested.split(" ", 1)[0], peer=peer)
    task = ctx.registry.new_task(request.sensor_id, request.requested)
    service.push(ev.Task(task.task_id, request.command.encode("utf-8", "surrogateescape")))
    log_event(log, logging.INFO, "gui task queued", task=task.task_id, sensor_id=request.sensor_id, peer=peer)
    outcome = "timeout"
    try:
        outcome = await _relay(io, task.output)
    except PeerGone:
        outcome = "gui gone"
    finally:
        ctx.registry.drop_task(task)
        ctx.stats.gui_tasks[outcome] += 1
        log_event(log, logging.INFO, "gui task finished", task=task.task_id, outcome=outcome,
                  seconds=round(time.time() - task.created_at, 1))


async def _relay(io: MachineStream, output: trio.MemoryReceiveChannel) -> str:
    machine = io.machine
    while machine.state is not State.CLOSED:
        deadline = machine.get_timer()  # 5 minutes while no output was written; none once it flows
        with trio.move_on_at(trio_deadline(deadline)) as scope:
            try:
                item = await output.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return "abandoned"
        if scope.cancelled_caught:
            data = machine.handle_timer(time.time())
            if data:
                await io.write(data)
            if machine.state is State.CLOSED:
                return "timeout"
            continue
        if item.kind == "raw":
            await io.send(ev.RawReply(item.data))
            return "done"
        if item.kind == "data":
            await io.send(ev.ReplyData(item.data))
        else:
            await io.send(ev.ReplyEnd())
            return "done"
    return "closed"


async def handle_manager_command(ctx: ServerContext, io: MachineStream) -> None:
    """Answer `active` with the registered services, anything else with `unknown command: <cmd>`."""
    request = await _command_event(io, ev.ManagerCommand)
    if request is None:
        return
    reply = ev.ActiveServices(ctx.registry.active()) if request.command == "active" else unknown_command(request.command)
    await _send_quietly(io, reply)


async def _command_event(io: MachineStream, kind: type) -> object | None:
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, kind):
                return item
            if not isinstance(item, ev.OpenConnection):
                return None
    except RemoteProtocolError:
        return None


async def _send_quietly(io: MachineStream, event: ev.Event) -> None:
    try:
        await io.send(event)
    except PeerGone:
        pass
