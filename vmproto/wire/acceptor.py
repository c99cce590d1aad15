"""Server side of a new C/S connection before its type is known (spec §1): opening line → which machine.

    acceptor = Acceptor(manager_key=...)
    acceptor.receive_data(data, now=...)
    opening = acceptor.next_opening()          # None: need more data; raises RemoteProtocolError (close, no reply)
    conn = acceptor.build(opening, **config)   # the type's server machine, already past its opening line

The reference waits forever for the opening line; vmproto caps it (spec §17): `max_size` bytes and `timeout`
seconds (`get_timer()` / `handle_timer(now)`, which raises RemoteProtocolError("opening line timeout")).
Unknown types, oversize or undecryptable lines close without a reply, as in the reference.
"""

from __future__ import annotations

from typing import Any

from vmproto.wire.connection import DEFAULT_OPENING_MAX, DEFAULT_OPENING_TIMEOUT, Connection
from vmproto.wire.crypto import ManagerAesKey
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.gui import GuiCommandServer, ManagerCommandServer
from vmproto.wire.keycheck import KeycheckServer
from vmproto.wire.opening import Opening, OpeningReader
from vmproto.wire.packetbuffer import PacketbufferServer
from vmproto.wire.query import QueryServer
from vmproto.wire.response import ResponseServer, ResponsesServer
from vmproto.wire.service import ServiceServer
from vmproto.wire.store import StoreServer

__all__ = ["Acceptor", "SERVER_MACHINES", "OPENING_TIMEOUT"]

OPENING_TIMEOUT = "opening line timeout"

SERVER_MACHINES: dict[str, type[Connection]] = {
    "service": ServiceServer,
    "response": ResponseServer,
    "responses": ResponsesServer,
    "query": QueryServer,
    "store": StoreServer,
    "packetbuffer block": PacketbufferServer,
    "keycheck": KeycheckServer,
    "gui_command": GuiCommandServer,
    "manager_command": ManagerCommandServer,
}


class Acceptor:
    """Reads the opening line of an accepted connection and hands over to the type's server machine."""

    def __init__(self, *, max_size: int = DEFAULT_OPENING_MAX, timeout: float = DEFAULT_OPENING_TIMEOUT,
                 manager_key: ManagerAesKey | None = None) -> None:
        self._reader = OpeningReader(max_size=max_size, manager_key=manager_key)
        self._timeout = timeout
        self._deadline: float | None = None
        self._done = False
        self.manager_key = manager_key

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        """Feed bytes (b"" = EOF). Raises RemoteProtocolError when the line is over `max_size`, or the peer
        closed before finishing it."""
        self._arm(now)
        if self._done:
            raise LocalProtocolError("the opening line was already read")
        if not data:
            self._done = True
            raise RemoteProtocolError("connection closed before the opening line")
        self._reader.receive_data(data)

    def next_opening(self, now: float | None = None) -> Opening | None:
        """Return the Opening when complete, else None. Raises RemoteProtocolError (close, nothing written)."""
        self._arm(now)
        opening = self._reader.next_opening()
        if opening is not None:
            self._done = True
            self._deadline = None
        return opening

    def get_timer(self) -> float | None:
        """Deadline for the whole opening line (None until a `now` was given)."""
        return None if self._done else self._deadline

    def handle_timer(self, now: float) -> None:
        """Raise RemoteProtocolError("opening line timeout") once the deadline passed."""
        if not self._done and self._deadline is not None and now >= self._deadline:
            self._done = True
            raise RemoteProtocolError(OPENING_TIMEOUT)

    def build(self, opening: Opening, **config: Any) -> Connection:
        """Return the server machine for `opening`'s type, constructed with `config` and the opening applied.

        Raises LocalProtocolError when `config` does not fit that machine's constructor.
        """
        cls = SERVER_MACHINES[opening.type_connection]
        if cls in (GuiCommandServer, ManagerCommandServer):
            config.setdefault("manager_key", self.manager_key)
        try:
            return cls(opening=opening, **config)
        except TypeError as exc:
            raise LocalProtocolError(f"bad configuration for {cls.__name__}: {exc}") from exc

    def _arm(self, now: float | None) -> None:
        if now is not None and self._deadline is None and not self._done:
            self._deadline = now + self._timeout
