"""A recording TCP proxy: forwards connections to a target and records both directions as a pcap.

The demo puts it between sensors and the central so that `python -m vmproto.inspect` can decode what crossed the
channel without capture privileges. Each conversation is recorded with the proxy's outbound address as the client
end: that is the peer the central sees, so the central's key log (`conn` = client port) lines up with the pcap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.testing.tcprecord import TcpConversation, write_pcap

log = logging.getLogger("vmproto.testing.recproxy")


class RecordingProxy:
    """`await nursery.start(proxy.serve)` returns the listening port; `proxy.write(path)` saves the capture."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.clock = clock
        self.conversations: list[TcpConversation] = []
        self.port: int | None = None

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen[1], host=self.listen[0])
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, inbound: trio.SocketStream) -> None:
        try:
            outbound = await trio.open_tcp_stream(*self.target)
        except OSError as exc:
            log_event(log, logging.WARNING, "proxy target unreachable", target=f"{self.target[0]}:{self.target[1]}",
                      error=exc.strerror or str(exc))
            await inbound.aclose()
            return
        local = outbound.socket.getsockname()[:2]
        conv = TcpConversation((local[0], local[1]), self.target)
        conv.open(self.clock())
        self.conversations.append(conv)
        async with inbound, outbound, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, inbound, outbound, conv, "c2s", nursery.cancel_scope)
            nursery.start_soon(self._pump, outbound, inbound, conv, "s2c", nursery.cancel_scope)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, conv: TcpConversation, direction: str,
                    scope: trio.CancelScope) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    conv.fin(self.clock(), direction)
                    try:
                        await dst.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        scope.cancel()
                    return
                conv.data(self.clock(), direction, data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            conv.rst(self.clock(), direction)
            scope.cancel()

    def write(self, path: str | Path) -> int:
        """Write every conversation recorded so far; returns the number of frames."""
        return write_pcap(path, list(self.conversations))
