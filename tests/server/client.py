"""A test client for the central server: real loopback sockets, driven by the vmproto.wire client machines."""

from __future__ import annotations

import functools
import time
from typing import Any

import trio

from vmproto.wire import events as ev
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import generate_aes_strings, generate_rsa_key
from vmproto.wire.errors import RemoteProtocolError

PASSWORD = "testpass"


@functools.cache
def cached_key(bits: int) -> Any:
    """One RSA key per size for the whole test run: a key factory for the server's pool (generation is slow)."""
    return generate_rsa_key(bits)


class WireClient:
    """One client connection: `send(event)`, `next_event()`, `raw(bytes)`, `close()`."""

    def __init__(self, stream: trio.SocketStream, machine: Connection | None) -> None:
        self.stream = stream
        self.machine = machine
        self.received = bytearray()  # raw bytes, for machine-less connections

    @classmethod
    async def connect(cls, port: int, machine: Connection | None = None, host: str = "127.0.0.1") -> WireClient:
        return cls(await trio.open_tcp_stream(host, port), machine)

    async def send(self, event: ev.Event) -> None:
        assert self.machine is not None
        data = self.machine.send(event, time.time())
        if data:
            await self.stream.send_all(data)

    async def raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self, timeout: float = 10.0) -> Any:
        """The next event of the machine (ConnectionClosed at EOF). Raises RemoteProtocolError, TooSlowError."""
        assert self.machine is not None
        with trio.fail_after(timeout):
            while True:
                event = self.machine.next_event(time.time())
                if event is not ev.NEED_DATA:
                    return event
                try:
                    data = await self.stream.receive_some(1 << 20)
                except trio.BrokenResourceError:
                    data = b""
                self.machine.receive_data(data, time.time())

    async def read_all(self, timeout: float = 10.0) -> bytes:
        """Raw bytes until the server closes."""
        with trio.fail_after(timeout):
            while True:
                try:
                    data = await self.stream.receive_some(1 << 20)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    return bytes(self.received)
                self.received += data

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the server closes the connection without sending anything more."""
        with trio.fail_after(timeout):
            try:
                data = await self.stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                return True
            return data == b""

    async def close(self) -> None:
        await self.stream.aclose()


async def handshake(client: WireClient, credentials: ev.Event, fields: dict | None = None,
                    timeout: float = 10.0) -> ev.Event:
    """Open the connection, take the RSA key, send `credentials`; return the server's handshake reply event."""
    assert client.machine is not None
    await client.send(ev.OpenConnection(client.machine.connection_type, fields or {}))
    key = await client.next_event(timeout)
    assert isinstance(key, ev.RsaKey), key
    await client.send(credentials)
    return await client.next_event(timeout)


def credentials(password: str = PASSWORD) -> ev.Credentials:
    ckey, ivec = generate_aes_strings()
    return ev.Credentials(password, ckey, ivec)


def service_credentials(sensor_id: int = 2, password: str = PASSWORD, **kw: Any) -> ev.ServiceCredentials:
    ckey, ivec = generate_aes_strings()
    return ev.ServiceCredentials(sensor_id=sensor_id, password=password, aes_ckey=ckey, aes_ivec=ivec,
                                 sensor_version=2026004000, **kw)


async def expect_error(client: WireClient) -> RemoteProtocolError | ev.Event:
    try:
        return await client.next_event()
    except RemoteProtocolError as exc:
        return exc


async def eventually(predicate, timeout: float = 5.0) -> None:
    """Wait until `predicate()` is true (work the server does after its reply, e.g. spooling packets)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
