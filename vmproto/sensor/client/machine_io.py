"""Drive a sans-IO connection machine (vmproto.wire) over a Trio stream: the thin adapter of every channel.

`MachineStream.send(event)` writes what the machine encodes (bounded by `write_timeout`); `next_event()` reads
until the machine yields an event, honouring the machine's own deadline (`get_timer()`): when it passes,
`handle_timer()` runs and the machine reports `ConnectionClosed("timeout")`. Protocol errors of the peer come out
as `ChannelLost`, so callers handle one failure type per channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from vmproto.sensor.client.errors import ChannelLost
from vmproto.wire import events as ev
from vmproto.wire.connection import Connection
from vmproto.wire.errors import LocalProtocolError, ProtocolError

__all__ = ["MachineStream"]

_READ_SIZE = 256 * 1024


class MachineStream:
    """One connection: a Trio stream plus its machine. `clock` gives UNIX seconds (the machine's `now`)."""

    def __init__(self, stream: trio.abc.Stream, machine: Connection, *, write_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time, peer: str = "") -> None:
        self.stream = stream
        self.machine = machine
        self.write_timeout = write_timeout
        self.clock = clock
        self.peer = peer
        self.bytes_out = 0
        self.bytes_in = 0
        self._closed = False

    async def send(self, event: ev.Event) -> None:
        """Encode `event` and write it. Raises ChannelLost when the write fails or times out;
        LocalProtocolError (a bug of ours) passes through."""
        data = self.machine.send(event, self.clock())
        if data:
            await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes the machine produced. Raises ChannelLost on failure or after `write_timeout`."""
        try:
            with trio.fail_after(self.write_timeout):
                await self.stream.send_all(data)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ChannelLost(f"write failed: {exc!r}") from None
        self.bytes_out += len(data)

    async def next_event(self) -> ev.Event:
        """Return the next event (ConnectionClosed on EOF or the machine's timeout).

        Raises ChannelLost when the peer broke the protocol or the socket failed.
        """
        machine = self.machine
        while True:
            try:
                event = machine.next_event(self.clock())
            except ProtocolError as exc:
                if isinstance(exc, LocalProtocolError):
                    raise
                raise ChannelLost(f"protocol error: {exc}", exc) from None
            if event is not ev.NEED_DATA:
                return event  # type: ignore[return-value]
            deadline = machine.get_timer()
            data: bytes | None = None
            try:
                if deadline is None:
                    data = await self.stream.receive_some(_READ_SIZE)
                else:
                    with trio.move_on_after(max(deadline - self.clock(), 0.0)):
                        data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ChannelLost(f"read failed: {exc!r}") from None
            if data is None:
                # Timer actions may write (a server's ping); client machines only close.
                out = machine.handle_timer(max(self.clock(), deadline or 0.0))
                if out:
                    await self.send_raw(out)
                continue
            self.bytes_in += len(data)
            try:
                machine.receive_data(data, self.clock())
            except ProtocolError as exc:
                if isinstance(exc, LocalProtocolError):
                    raise
                raise ChannelLost(f"protocol error: {exc}", exc) from None

    async def expect(self, *types: type[ev.Event]) -> Any:
        """Return the next event if it is one of `types`; raise ChannelLost for anything else
        (ConnectionClosed included), naming what came."""
        event = await self.next_event()
        if isinstance(event, types):
            return event
        if isinstance(event, ev.ConnectionClosed):
            raise ChannelLost(f"connection closed ({event.reason})")
        raise ChannelLost(f"unexpected {type(event).__name__}")

    async def aclose(self) -> None:
        """Close the socket (FIN); never raises."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, OSError):
                pass
