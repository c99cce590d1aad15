"""Every transition table and timeout of the connection state machines, in one place (spec §6-§14).

Rules for this file (keep them; they are what makes the machines reviewable):

1. Only data lives here: states, `(state, input) -> (next state, direction)` tables per connection type and
   role, and timeouts per state. No parsing, no encoding, no I/O. The machines in service.py, store.py, ... look
   their moves up here and nowhere else; a move not in its table is an error (LocalProtocolError when we try to
   send it, RemoteProtocolError when the peer sends it), and any error leaves the machine CLOSED.
2. spec/machines/<type>.toml is the machine-readable twin of these tables (with the spec § of every line);
   tests/wire/test_machines_toml.py asserts they are equal, so change both together.
3. An *input* is the event class name. A few events move to different states depending on a flag; their input
   name then carries a variant after a slash, chosen by the machine's `_input_name()`:
   `PacketbufferBlock/confirm|noconfirm` (the container's require_confirmation byte),
   `Rejected/reply|noreply` (whether the protocol prescribes an answer), `Refuse/delayed` (a refusal held back
   by a timer), `Ping/await|noawait` (service server: whether the sensor announced check_ping_response).
4. Direction: "send" = only we may produce the input, "receive" = only the peer, "both" = either.
   `ConnectionClosed` (EOF, timeout or our own close) is accepted in every state except CLOSED and leads to
   CLOSED; it is added by `_closable()` rather than written out per state (the TOML says
   `closes_from_every_state = true`).
5. Timeouts: `Timeout(seconds, clock, action)`. clock "state" counts from entering the state (self-loops do not
   restart it), "idle" restarts on every event, "write" restarts on every event we send. Actions: "close"
   (emit ConnectionClosed("timeout")), "ping" (the service server writes `ping`), "refuse" (write the held-back
   refusal, close), "gui_timeout" (write raw `timeout` to the GUI, close), "chart_timeout" (no reply to an
   `rch:` push: emit ChartReply("") and go back to READY). A `None` seconds value means "set by the event"
   (only the delayed refusal). Machines may override seconds through their constructor (e.g. the service
   client's receive timeout).
"""

from __future__ import annotations

import enum
from typing import Literal, NamedTuple

__all__ = [
    "State",
    "Role",
    "Timeout",
    "Direction",
    "TABLES",
    "TIMEOUTS",
    "INITIAL",
    "CLOSE_INPUT",
    "machine_key",
]


class State(enum.Enum):
    """Dialogue position of a connection; the same names serve both roles (who moves next differs)."""

    OPENING = "OPENING"  # client must send the opening line; server waits for it
    RSA_KEY = "RSA_KEY"  # server must send its RSA public key; client waits
    CREDENTIALS = "CREDENTIALS"  # client must send the RSA-encrypted credentials; server waits
    HANDSHAKE_REPLY = "HANDSHAKE_REPLY"  # server must accept or refuse; client waits
    REFUSING = "REFUSING"  # server holds a refusal back until its timer fires (duplicate service, 5 s)
    READY = "READY"  # data phase, nothing outstanding
    REPLY = "REPLY"  # a request is outstanding: the server must answer, the client waits
    PONG = "PONG"  # service: a ping is outstanding
    CHART_REPLY = "CHART_REPLY"  # service: an rch: push is outstanding
    KEYS = "KEYS"  # response server: waiting for the caller to find the task's AES keys
    COMMAND = "COMMAND"  # gui/manager server: opening read, the command event comes next
    TASK = "TASK"  # gui/manager server: the caller must answer the command
    STREAM = "STREAM"  # raw byte stream flowing (response, GUI replies)
    CLOSED = "CLOSED"


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


Direction = Literal["send", "receive", "both"]


class Timeout(NamedTuple):
    seconds: float | None
    clock: Literal["state", "idle", "write"]
    action: Literal["close", "ping", "refuse", "gui_timeout", "chart_timeout"]


CLOSE_INPUT = "ConnectionClosed"

S = State
SEND: Direction = "send"
RECV: Direction = "receive"

Table = dict[tuple[State, str], tuple[State, Direction]]


def _closable(rows: list[tuple[State, str, State, Direction]]) -> Table:
    table: Table = {}
    for state, name, next_state, direction in rows:
        key = (state, name)
        if key in table:  # pragma: no cover - guards this file against typos
            raise AssertionError(f"duplicate transition {key}")
        table[key] = (next_state, direction)
    used = {s for s, _ in table} | {t for t, _ in table.values()}
    for state in State:  # enum order keeps the table order stable
        if state in used and state is not State.CLOSED:
            table.setdefault((state, CLOSE_INPUT), (State.CLOSED, "both"))
    return table


def _mirror(rows: list[tuple[State, str, State, Direction]]) -> list[tuple[State, str, State, Direction]]:
    """The other role's view of a dialogue: same moves, directions swapped."""
    swap = {SEND: RECV, RECV: SEND, "both": "both"}
    return [(s, n, t, swap[d]) for s, n, t, d in rows]  # type: ignore[misc]


# --- the generic RSA/AES handshake (spec §6), written from the client's side ------------------------------------

_HANDSHAKE_CLIENT = [
    (S.OPENING, "OpenConnection", S.RSA_KEY, SEND),
    (S.RSA_KEY, "RsaKey", S.CREDENTIALS, RECV),
    (S.CREDENTIALS, "Credentials", S.HANDSHAKE_REPLY, SEND),
    (S.HANDSHAKE_REPLY, "HandshakeOK", S.READY, RECV),
    (S.HANDSHAKE_REPLY, "Refuse", S.CLOSED, RECV),
]


def _handshake_server(rows: list[tuple[State, str, State, Direction]]) -> list[tuple[State, str, State, Direction]]:
    return _mirror(rows) + [(S.HANDSHAKE_REPLY, "Refuse/delayed", S.REFUSING, SEND)]


def _swap_credentials(rows: list, credentials: str, accepted: str) -> list:
    out = []
    for s, n, t, d in rows:
        n = {"Credentials": credentials, "HandshakeOK": accepted}.get(n, n)
        out.append((s, n, t, d))
    return out


def _request_reply(request: str, replies: list[str]) -> list[tuple[State, str, State, Direction]]:
    rows = [(S.READY, request, S.REPLY, SEND)]
    rows += [(S.REPLY, reply, S.READY, RECV) for reply in replies]
    return rows


# --- per type, client side; the server side is the mirror plus its own extras ------------------------------------

_QUERY_CLIENT = _HANDSHAKE_CLIENT + _request_reply("QueryRequest", ["QueryResponse"]) + [
    (S.READY, "End", S.CLOSED, SEND),
]
_QUERY_SERVER = _handshake_server(_HANDSHAKE_CLIENT) + _mirror(_request_reply("QueryRequest", ["QueryResponse"])) + [
    (S.READY, "End", S.CLOSED, RECV),
]

_STORE_HS = _swap_credentials(_HANDSHAKE_CLIENT, "Credentials", "StoreAccepted")
_STORE_DATA = _request_reply("StoreQueries", ["StoreOK", "StoreError"]) + [(S.READY, "StoreCheck", S.REPLY, SEND)]
_STORE_CLIENT = _STORE_HS + _STORE_DATA
_STORE_SERVER = _handshake_server(_STORE_HS) + _mirror(_STORE_DATA)

_PB_HS = _swap_credentials(_HANDSHAKE_CLIENT, "PacketbufferCredentials", "HandshakeOK")
_PB_DATA = [
    (S.READY, "PacketbufferBlock/confirm", S.REPLY, SEND),
    (S.READY, "PacketbufferBlock/noconfirm", S.READY, SEND),
    (S.REPLY, "BlockReply", S.READY, RECV),
]
_PB_CLIENT = _PB_HS + _PB_DATA
_PB_SERVER = _handshake_server(_PB_HS) + _mirror(_PB_DATA) + [
    (S.READY, "BlockLoss", S.READY, RECV),
    (S.READY, "Rejected/reply", S.REPLY, RECV),
    (S.READY, "Rejected/noreply", S.READY, RECV),
]

_RESPONSES_DATA = _request_reply("ResponseItem", ["ResponseReply"])
_RESPONSES_CLIENT = _HANDSHAKE_CLIENT + _RESPONSES_DATA
_RESPONSES_SERVER = _handshake_server(_HANDSHAKE_CLIENT) + _mirror(_RESPONSES_DATA) + [
    (S.READY, "Rejected/reply", S.REPLY, RECV),
]

_KEYCHECK_DATA = _request_reply("KeycheckRequest", ["KeycheckReply"])
_KEYCHECK_CLIENT = _HANDSHAKE_CLIENT + _KEYCHECK_DATA
_KEYCHECK_SERVER = _handshake_server(_HANDSHAKE_CLIENT) + _mirror(_KEYCHECK_DATA)

_SERVICE_HS = _swap_credentials(_HANDSHAKE_CLIENT, "ServiceCredentials", "ServiceAccepted")
_SERVICE_CLIENT = _SERVICE_HS + [
    (S.READY, "Ping", S.PONG, RECV),
    (S.PONG, "Pong", S.READY, SEND),
    (S.PONG, "Stop", S.CLOSED, SEND),
    # A server that does not wait for pongs (no check_ping_response) may push before we answered.
    (S.PONG, "Ping", S.PONG, RECV),
    (S.PONG, "Task", S.PONG, RECV),
    (S.READY, "Task", S.READY, RECV),
    (S.READY, "ChartPush", S.CHART_REPLY, RECV),
    (S.CHART_REPLY, "ChartReply", S.READY, SEND),
    (S.READY, "Rejected/reply", S.CHART_REPLY, RECV),
    (S.READY, "Rejected/noreply", S.READY, RECV),
    (S.PONG, "Rejected/noreply", S.PONG, RECV),
]
_SERVICE_SERVER = _handshake_server(_SERVICE_HS) + [
    (S.READY, "Ping/await", S.PONG, SEND),
    (S.READY, "Ping/noawait", S.READY, SEND),
    (S.PONG, "Pong", S.READY, RECV),
    (S.PONG, "Stop", S.CLOSED, RECV),
    # Old sensors without check_ping_response answer pings the server does not wait for.
    (S.READY, "Pong", S.READY, RECV),
    (S.READY, "Task", S.READY, SEND),
    (S.READY, "ChartPush", S.CHART_REPLY, SEND),
    (S.CHART_REPLY, "ChartReply", S.READY, RECV),
]

_RESPONSE_CLIENT = [
    (S.OPENING, "OpenConnection", S.STREAM, SEND),
    (S.STREAM, "ResponseData", S.STREAM, SEND),
    (S.STREAM, "ResponseEnd", S.CLOSED, SEND),
]
_RESPONSE_SERVER = [
    (S.OPENING, "OpenConnection", S.KEYS, RECV),
    (S.KEYS, "ResponseKeys", S.STREAM, SEND),
    (S.STREAM, "ResponseData", S.STREAM, RECV),
    (S.STREAM, "ResponseEnd", S.CLOSED, RECV),
]

_GUI_CLIENT = [
    (S.OPENING, "OpenConnection", S.STREAM, SEND),
    (S.STREAM, "ReplyData", S.STREAM, RECV),
]
_GUI_SERVER = [
    (S.OPENING, "OpenConnection", S.COMMAND, RECV),
    (S.COMMAND, "GuiCommand", S.TASK, RECV),
    (S.TASK, "RawReply", S.CLOSED, SEND),
    (S.TASK, "ReplyData", S.STREAM, SEND),
    (S.TASK, "ReplyEnd", S.CLOSED, SEND),
    (S.STREAM, "ReplyData", S.STREAM, SEND),
    (S.STREAM, "ReplyEnd", S.CLOSED, SEND),
    (S.STREAM, "RawReply", S.CLOSED, SEND),
]
_MANAGER_CLIENT = _GUI_CLIENT
_MANAGER_SERVER = [
    (S.OPENING, "OpenConnection", S.COMMAND, RECV),
    (S.COMMAND, "ManagerCommand", S.TASK, RECV),
    (S.TASK, "ActiveServices", S.CLOSED, SEND),
    (S.TASK, "RawReply", S.CLOSED, SEND),
]


def machine_key(connection_type: str, role: Role) -> tuple[str, Role]:
    return (connection_type, role)


_ROWS: dict[tuple[str, Role], list] = {
    ("service", Role.CLIENT): _SERVICE_CLIENT,
    ("service", Role.SERVER): _SERVICE_SERVER,
    ("query", Role.CLIENT): _QUERY_CLIENT,
    ("query", Role.SERVER): _QUERY_SERVER,
    ("store", Role.CLIENT): _STORE_CLIENT,
    ("store", Role.SERVER): _STORE_SERVER,
    ("packetbuffer block", Role.CLIENT): _PB_CLIENT,
    ("packetbuffer block", Role.SERVER): _PB_SERVER,
    ("responses", Role.CLIENT): _RESPONSES_CLIENT,
    ("responses", Role.SERVER): _RESPONSES_SERVER,
    ("keycheck", Role.CLIENT): _KEYCHECK_CLIENT,
    ("keycheck", Role.SERVER): _KEYCHECK_SERVER,
    ("response", Role.CLIENT): _RESPONSE_CLIENT,
    ("response", Role.SERVER): _RESPONSE_SERVER,
    ("gui_command", Role.CLIENT): _GUI_CLIENT,
    ("gui_command", Role.SERVER): _GUI_SERVER,
    ("manager_command", Role.CLIENT): _MANAGER_CLIENT,
    ("manager_command", Role.SERVER): _MANAGER_SERVER,
}

TABLES: dict[tuple[str, Role], Table] = {key: _closable(rows) for key, rows in _ROWS.items()}

INITIAL = State.OPENING

# --- timeouts (spec §14; the opening-line cap is vmproto's, spec §17) -------------------------------------------

_T = Timeout
_CLIENT_HANDSHAKE_T = {
    S.RSA_KEY: _T(300.0, "state", "close"),
    S.HANDSHAKE_REPLY: _T(300.0, "state", "close"),
}
_SERVER_HANDSHAKE_T = {
    S.OPENING: _T(30.0, "state", "close"),
    S.CREDENTIALS: _T(300.0, "state", "close"),
    S.REFUSING: _T(None, "state", "refuse"),
}


def _client_rr() -> dict[State, Timeout]:
    return {**_CLIENT_HANDSHAKE_T, S.REPLY: _T(300.0, "state", "close")}


def _server_idle(seconds: float) -> dict[State, Timeout]:
    return {**_SERVER_HANDSHAKE_T, S.READY: _T(seconds, "idle", "close")}


TIMEOUTS: dict[tuple[str, Role], dict[State, Timeout]] = {
    ("service", Role.CLIENT): {**_CLIENT_HANDSHAKE_T, S.READY: _T(30.0, "idle", "close"),
                               S.PONG: _T(30.0, "state", "close"), S.CHART_REPLY: _T(30.0, "state", "close")},
    ("service", Role.SERVER): {**_SERVER_HANDSHAKE_T, S.READY: _T(5.0, "write", "ping"),
                               S.PONG: _T(5.0, "state", "close"), S.CHART_REPLY: _T(30.0, "state", "chart_timeout")},
    ("query", Role.CLIENT): _client_rr(),
    ("query", Role.SERVER): _server_idle(60.0),
    ("store", Role.CLIENT): _client_rr(),
    ("store", Role.SERVER): _server_idle(300.0),
    ("packetbuffer block", Role.CLIENT): _client_rr(),
    ("packetbuffer block", Role.SERVER): _server_idle(300.0),
    ("responses", Role.CLIENT): _client_rr(),
    ("responses", Role.SERVER): _server_idle(300.0),
    ("keycheck", Role.CLIENT): _client_rr(),
    ("keycheck", Role.SERVER): _server_idle(300.0),
    ("response", Role.CLIENT): {},
    ("response", Role.SERVER): {S.OPENING: _T(30.0, "state", "close"), S.STREAM: _T(300.0, "state", "close")},
    ("gui_command", Role.CLIENT): {},
    ("gui_command", Role.SERVER): {S.OPENING: _T(30.0, "state", "close"), S.TASK: _T(300.0, "state", "gui_timeout")},
    ("manager_command", Role.CLIENT): {},
    ("manager_command", Role.SERVER): {S.OPENING: _T(30.0, "state", "close")},
}
