"""The accept loop: bind, admit per source address (spec §1.7), start one handler task per connection."""

from __future__ import annotations

import collections
import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from vmproto.logs import log_event

__all__ = ["Listener", "peer_of"]

log = logging.getLogger("vmproto.server")

Handler = Callable[[trio.SocketStream, tuple[str, int]], Awaitable[None]]

# Errors accept() may return under load (out of descriptors, aborted handshakes) that must not end the server.
_TRANSIENT_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.ECONNABORTED, errno.EPROTO}


def peer_of(stream: trio.SocketStream) -> tuple[str, int]:
    """(ip, port) of the remote end, IPv4-mapped IPv6 shown as IPv4."""
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return ("?", 0)
    ip = str(addr[0])
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, int(addr[1])


class Listener:
    """Listening sockets plus the per-address connection count.

    `await nursery.start(listener.serve, connection_nursery)` binds and returns the bound (host, port) list;
    accepted connections run in `connection_nursery` so they can outlive the accept loop during shutdown.
    """

    def __init__(self, host: str, port: int, handler: Handler, *, max_per_address: int = 256,
                 on_refused: Callable[[str], None] | None = None, backlog: int = 512) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.max_per_address = max_per_address
        self.on_refused = on_refused
        self.backlog = backlog
        self.per_address: collections.Counter[str] = collections.Counter()
        self.addresses: list[tuple[str, int]] = []
        self._refusal_logged: dict[str, float] = {}

    async def serve(self, connection_nursery: trio.Nursery, *,
                    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind and accept until cancelled. Raises OSError when the address cannot be bound."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host or None, backlog=self.backlog)
        try:
            self.addresses = [tuple(ls.socket.getsockname()[:2]) for ls in listeners]  # type: ignore[misc]
            log_event(log, logging.INFO, "listening", addresses=",".join(f"{h}:{p}" for h, p in self.addresses))
            task_status.started(self.addresses)
            async with trio.open_nursery() as accept_nursery:
                for ls in listeners:
                    accept_nursery.start_soon(self._accept_loop, ls, connection_nursery)
        finally:
            with trio.CancelScope(shield=True):
                for ls in listeners:
                    await ls.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, connection_nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT:
                    log_event(log, logging.ERROR, "accept failed", error=exc.strerror or str(exc))
                    await trio.sleep(0.1)
                    continue
                raise
            peer = peer_of(stream)
            if self.per_address[peer[0]] >= self.max_per_address:
                self._refuse(peer[0])
                await trio.aclose_forcefully(stream)
                continue
            self.per_address[peer[0]] += 1
            connection_nursery.start_soon(self._run, stream, peer)

    async def _run(self, stream: trio.SocketStream, peer: tuple[str, int]) -> None:
        try:
            await self.handler(stream, peer)
        finally:
            self.per_address[peer[0]] -= 1
            if self.per_address[peer[0]] <= 0:
                del self.per_address[peer[0]]

    def _refuse(self, ip: str) -> None:
        if self.on_refused is not None:
            self.on_refused(ip)
        now = trio.current_time()
        if now - self._refusal_logged.get(ip, -1e9) >= 60:
            self._refusal_logged[ip] = now
            log_event(log, logging.WARNING, "connection refused", reason="too many connections from address",
                      peer=ip, limit=self.max_per_address)
            if len(self._refusal_logged) > 10_000:
                self._refusal_logged.clear()
