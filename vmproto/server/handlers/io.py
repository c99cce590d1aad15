"""The thin adapter between a Trio stream and a sans-IO connection machine (vmproto.wire).

A reader task moves bytes from the socket into a one-slot channel (so a peer that sends while we are busy
meets TCP back-pressure, not our memory); the handler calls `next_event()`, which feeds the machine, fires its
timers (pings, the delayed refusal, idle timeouts) and returns the machine's events — or an *external* item
another task pushed to this connection (a GUI task for a service, the shutdown notice). Writes are bounded by
`write_timeout`. A RemoteProtocolError from the machine is answered with the reply the protocol prescribes and
re-raised; the handler then ends the connection.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import Any

import trio

from vmproto.server.handlers.context import ServerContext
from vmproto.wire import events as ev
from vmproto.wire.connection import Connection
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["MachineStream", "PeerGone", "Shutdown", "SHUTDOWN", "RECV_SIZE"]

log = logging.getLogger("vmproto.server")

RECV_SIZE = 256 * 1024
DEFAULT_WRITE_TIMEOUT = 60.0
_KICK = object()


class PeerGone(Exception):
    """Writing to the peer failed or timed out: the connection is unusable."""


class Shutdown:
    """External item: the server is stopping; the handler ends at its next safe point."""

    def __repr__(self) -> str:
        return "SHUTDOWN"


SHUTDOWN = Shutdown()


def trio_deadline(wall_deadline: float | None) -> float:
    """Convert a machine deadline (UNIX time) to a Trio clock deadline."""
    if wall_deadline is None:
        return math.inf
    return trio.current_time() + max(0.0, wall_deadline - time.time())


class MachineStream:
    """One connection: the socket stream, its machine, and the external-item inbox.

    `start(nursery)` launches the reader; without it `next_event()` still works for machines that need no
    further input (gui_command/manager_command), returning only timer events and external items.
    """

    def __init__(self, ctx: ServerContext, stream: trio.abc.Stream, machine: Connection, *, peer: tuple[str, int],
                 conn_id: int, write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        self.ctx = ctx
        self.stream = stream
        self.machine = machine
        self.peer = peer
        self.conn_id = conn_id
        self.type = machine.connection_type
        self.write_timeout = write_timeout
        self._externals: collections.deque[Any] = collections.deque()
        self._send, self._recv = trio.open_memory_channel[Any](1)
        self._reading = False

    # --- external items ------------------------------------------------------------------------------------
    def push(self, item: Any) -> None:
        """Queue an item for the handler (never blocks). Safe to call from any task of this Trio run."""
        self._externals.append(item)
        try:
            self._send.send_nowait(_KICK)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the handler is awake anyway (a data item is waiting) or gone

    # --- reading -------------------------------------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        """Start the reader task in the connection's nursery."""
        self._reading = True
        nursery.start_soon(self._reader)

    async def _reader(self) -> None:
        stats = self.ctx.stats
        while True:
            try:
                data = await self.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            stats.bytes_in[self.type] += len(data)
            try:
                await self._send.send(bytes(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return

    def feed(self, data: bytes) -> None:
        """Hand bytes read before this adapter existed (e.g. after the opening line) to the machine."""
        if data:
            self.machine.receive_data(data, time.time())

    async def next_event(self) -> Any:
        """Return the next machine event or external item.

        Raises RemoteProtocolError after writing the prescribed reply (the machine is then CLOSED), PeerGone
        when a write failed.
        """
        machine = self.machine
        while True:
            if self._externals:
                return self._externals.popleft()
            try:
                event = machine.next_event(time.time())
            except RemoteProtocolError as exc:
                await self._reply_error(exc)
                raise
            if event is not ev.NEED_DATA:
                return event
            deadline = machine.get_timer()
            item: Any = None
            with trio.move_on_at(trio_deadline(deadline)) as scope:
                if self._reading:
                    item = await self._recv.receive()
                else:
                    item = await self._wait_external()
            if scope.cancelled_caught:
                out = machine.handle_timer(time.time())
                if out:
                    await self.write(out)
                continue
            if item is _KICK:
                continue
            try:
                machine.receive_data(item, time.time())
            except RemoteProtocolError as exc:
                await self._reply_error(exc)
                raise

    async def _wait_external(self) -> Any:
        # Without a reader only external items (and the timer) can wake us.
        while True:
            item = await self._recv.receive()
            if item is _KICK:
                return _KICK

    # --- writing -------------------------------------------------------------------------------------------
    async def send(self, event: ev.Event) -> None:
        """Encode `event` with the machine and write it. Raises PeerGone, LocalProtocolError (our misuse)."""
        data = self.machine.send(event, time.time())
        if data:
            await self.write(data)

    async def write(self, data: bytes) -> None:
        """Write bytes within `write_timeout`. Raises PeerGone."""
        try:
            with trio.fail_after(self.write_timeout):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError) as exc:
            raise PeerGone(f"write failed: {exc!r}") from exc
        self.ctx.stats.bytes_out[self.type] += len(data)

    async def _reply_error(self, exc: RemoteProtocolError) -> None:
        self.ctx.stats.protocol_errors[self.type] += 1
        try:
            reply = self.machine.encode_reply(exc)
        except LocalProtocolError:
            reply = b""
        if reply:
            try:
                await self.write(reply)
            except PeerGone:
                pass

    async def aclose(self) -> None:
        """Close the socket (never raises, never blocks for long)."""
        self._send.close()
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)
