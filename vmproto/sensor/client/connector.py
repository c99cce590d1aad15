"""Destinations, TCP connects with failover, and the client handshake (spec §6, §14.3).

`server_destination` is a `,`/`;` list; every new connection tries the hosts in list order (each host's resolved
addresses in order) and takes the first that accepts TCP. There is no stickiness: the next connection starts again
at the first host, which is how a sensor returns to its primary central once it is back.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from vmproto.logs import RateLimiter, log_event
from vmproto.sensor.client.errors import ClientError, ConnectFailed, HandshakeRefused
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.timings import Timings
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.connection import Connection

__all__ = ["parse_destinations", "Connector", "Connected", "open_channel"]

log = logging.getLogger("vmproto.sensor.client")


def parse_destinations(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Split `server_destination` (spec §14.3): `,` or `;` separated, entries trimmed, empty ones dropped, anything
    after a `/` in an entry ignored. Accepts the config layer's tuple too. Raises ClientError when nothing is left."""
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for part in item.replace(";", ",").split(","):
            host = part.split("/", 1)[0].strip()
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            if host:
                out.append(host)
    if not out:
        raise ClientError("server_destination is empty")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Connected:
    """A TCP connection and where it goes."""

    stream: trio.SocketStream
    host: str  # the destination entry that accepted (what `response` connections reuse, spec §11.1)
    address: str  # the IP address actually connected


class Connector:
    """Opens TCP connections to the central with failover in list order.

    `resolver` (tests) maps a host to its addresses; default: getaddrinfo in list order.
    """

    def __init__(self, destinations: tuple[str, ...], port: int, timings: Timings | None = None,
                 resolver: Callable[[str, int], Any] | None = None) -> None:
        if not destinations:
            raise ClientError("no destinations")
        if not 0 < port <= 65535:
            raise ClientError(f"server_destination_port out of range: {port}")
        self.destinations = tuple(destinations)
        self.port = port
        self.timings = timings or Timings()
        self._resolver = resolver
        self.connects = 0
        self.connect_failures = 0
        self._limiter = RateLimiter(per_second=1 / 60, burst=1)

    async def _resolve(self, host: str) -> list[str]:
        if self._resolver is not None:
            return list(await self._resolver(host, self.port))
        infos = await trio.socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)
        seen: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            if sockaddr[0] not in seen:
                seen.append(sockaddr[0])
        return seen

    async def connect(self, hosts: tuple[str, ...] | None = None) -> Connected:
        """Connect to the first host (of `hosts`, default all destinations) that accepts.

        Raises ConnectFailed with the reference's wording when every address failed.
        """
        hosts = hosts or self.destinations
        tried: list[str] = []
        last_error = ""
        resolved_any = False
        for host in hosts:
            try:
                addresses = await self._resolve(host)
            except OSError as exc:
                last_error = exc.strerror or str(exc)
                continue
            resolved_any = resolved_any or bool(addresses)
            for address in addresses:
                tried.append(address)
                try:
                    with trio.fail_after(self.timings.connect_timeout):
                        stream = await trio.open_tcp_stream(address, self.port)
                except trio.TooSlowError:
                    last_error = "connect timeout"
                    continue
                except OSError as exc:
                    last_error = exc.strerror or str(exc)
                    continue
                self.connects += 1
                return Connected(stream, host, address)
        self.connect_failures += 1
        if not resolved_any:
            raise ConnectFailed(f"failed resolve host(s) {','.join(hosts)}")
        raise ConnectFailed(
            f"failed connection to all possible ips ({','.join(tried)}) of the servers {','.join(hosts)} : "
            f"last error:[{last_error}]"
        )

    def allow_log(self, key: str) -> bool:
        """True at most once per minute per `key` (identical repeated failures, spec §14.2)."""
        return self._limiter.allow(key, time.monotonic())

    def log_failure(self, what: str, exc: Exception) -> None:
        """Log a repeated failure at most once per minute per text (spec §14.2)."""
        key = f"{what}:{exc}"
        if self._limiter.allow(key, time.monotonic()):
            log_event(log, logging.WARNING, "connection failed", channel=what, error=str(exc))


async def open_channel(connector: Connector, machine: Connection, credentials: ev.Event,
                       accepted: type[ev.Event], *, opening_fields: dict[str, Any] | None = None,
                       hosts: tuple[str, ...] | None = None) -> tuple[MachineStream, ev.Event, Connected]:
    """Connect and run the handshake of `machine` (service or generic, spec §6/§7).

    Returns (stream, the accepting event, the connection). Raises ConnectFailed, HandshakeRefused (the central's
    text), or ChannelLost (EOF / timeout / protocol error during the handshake). The socket is closed on failure.
    """
    t = connector.timings
    for state in (State.RSA_KEY, State.HANDSHAKE_REPLY):
        machine.set_timeout(state, t.handshake_timeout)
    conn = await connector.connect(hosts)
    ms = MachineStream(conn.stream, machine, write_timeout=t.write_timeout, peer=conn.address)
    try:
        await ms.send(ev.OpenConnection(machine.connection_type, opening_fields or {}))
        await ms.expect(ev.RsaKey)
        await ms.send(credentials)
        reply = await ms.expect(accepted, ev.Refuse)
        if isinstance(reply, ev.Refuse):
            raise HandshakeRefused(machine.connection_type, reply.text)
    except BaseException:
        await ms.aclose()
        raise
    return ms, reply, conn


