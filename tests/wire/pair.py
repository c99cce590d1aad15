"""In-memory client/server pair for the connection machines (h11 ConnectionPair / aioquic client_and_server).

`Pair(client, server)` moves bytes between two machines: `client_send(event)` feeds the client's bytes to the
server and returns the server's events (until NEED_DATA), `server_send(event)` the other way round. Timers are
driven with `advance(seconds)`, which runs both machines' `handle_timer` and delivers what they write.
Deterministic keys: `rsa_key(bits)` caches one RSA key per size for the whole test session.
"""

from __future__ import annotations

import functools
from typing import Any

from vmproto.wire import events as ev
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import generate_rsa_key

CKEY = "0123456789:;<=>?@ABCDEFGHIJKLMNO"
IVEC = "PQRSTUVWXYZ[]^_`"


@functools.cache
def rsa_key(bits: int = 2048) -> Any:
    """One RSA key per size for all tests (generation is slow, and fresh keys add nothing here)."""
    return generate_rsa_key(bits)


def drain(conn: Connection, now: float | None = None) -> list[ev.Event]:
    """Return every event `conn` can produce now (stops at NEED_DATA or after a ConnectionClosed)."""
    out: list[ev.Event] = []
    while True:
        event = conn.next_event(now)
        if event is ev.NEED_DATA:
            return out
        out.append(event)  # type: ignore[arg-type]
        if isinstance(event, ev.ConnectionClosed):
            return out


class Pair:
    """A client machine wired to a server machine; `now` is a shared fake clock."""

    def __init__(self, client: Connection, server: Connection, now: float = 1_800_000_000.0) -> None:
        self.client = client
        self.server = server
        self.now = now
        self.c2s: list[bytes] = []  # everything written, for byte-exact checks
        self.s2c: list[bytes] = []

    def client_send(self, event: ev.Event) -> list[ev.Event]:
        data = self.client.send(event, self.now)
        self.c2s.append(data)
        if data:
            self.server.receive_data(data, self.now)
        return drain(self.server, self.now)

    def server_send(self, event: ev.Event) -> list[ev.Event]:
        data = self.server.send(event, self.now)
        self.s2c.append(data)
        if data:
            self.client.receive_data(data, self.now)
        return drain(self.client, self.now)

    def client_close(self) -> list[ev.Event]:
        self.server.receive_data(b"", self.now)
        return drain(self.server, self.now)

    def server_close(self) -> list[ev.Event]:
        self.client.receive_data(b"", self.now)
        return drain(self.client, self.now)

    def advance(self, seconds: float) -> tuple[list[ev.Event], list[ev.Event]]:
        """Move the clock; run both timers; deliver their output. Returns (client events, server events)."""
        self.now += seconds
        for src, dst, log in ((self.server, self.client, self.s2c), (self.client, self.server, self.c2s)):
            deadline = src.get_timer()
            if deadline is not None and deadline <= self.now:
                data = src.handle_timer(self.now)
                log.append(data)
                if data:
                    dst.receive_data(data, self.now)
        return drain(self.client, self.now), drain(self.server, self.now)

    def handshake(self, open_event: ev.OpenConnection, credentials: ev.Event, accept: ev.Event) -> ev.Event:
        """Run opening → RsaKey → credentials → accept; return the client's view of the accept."""
        got = self.client_send(open_event)
        assert got == [open_event], got
        pem = self.server.public_pem  # type: ignore[attr-defined]
        assert self.server_send(ev.RsaKey(pem)) == [ev.RsaKey(pem)]
        got = self.client_send(credentials)
        assert len(got) == 1, got
        reply = self.server_send(accept)
        assert len(reply) == 1, reply
        return reply[0]
