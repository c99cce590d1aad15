"""The shared engine of every connection machine (spec §6-§14): h11's three calls plus aioquic-style timers.

    conn.receive_data(data, now=...)      # bytes read from the socket; b"" = the peer closed
    conn.next_event(now=...)              # an Event, or NEED_DATA
    conn.send(event, now=...) -> bytes    # what to write
    conn.get_timer() -> float | None      # next deadline
    conn.handle_timer(now) -> bytes       # what to write when the deadline passed (ping, refusal, `timeout`)
    conn.encode_reply(error) -> bytes     # the reply a RemoteProtocolError prescribes, framed for this connection

`now` is UNIX time in seconds (the caller's `time.time()`): the same clock serves timers and the protocol's own
wall-clock checks (packetbuffer `time`, store `T<time>`). Passing it is optional where no timer or check needs it;
without it no deadline is armed.

Moves come only from `vmproto.wire._state`. Error rules: a RemoteProtocolError (the peer broke the protocol, or
a timeout action closed the connection) leaves the machine CLOSED and is raised again by every later
`next_event()`; a LocalProtocolError from `send()` (our own misuse) writes nothing and leaves the state unchanged.
"""

from __future__ import annotations

import collections
from typing import ClassVar

from vmproto.wire import events as ev
from vmproto.wire._state import CLOSE_INPUT, INITIAL, TABLES, TIMEOUTS, Role, State, Timeout
from vmproto.wire.crypto import AesBlockCipher, key_string_bytes
from vmproto.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from vmproto.wire.framing import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    BlockReader,
    byte_sum,
    encode_block,
    verify_checksum,
)

__all__ = ["Connection", "DEFAULT_MAX_DECOMPRESSED", "DEFAULT_OPENING_MAX", "DEFAULT_OPENING_TIMEOUT"]

DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024
DEFAULT_OPENING_MAX = 65536
DEFAULT_OPENING_TIMEOUT = 30.0


class Connection:
    """Base class: input buffering, the transition table, timers and block framing.

    Subclasses set `connection_type` and `role` and implement `_parse()` (turn buffered input into events),
    `_encode(event)` (the bytes for an event we send) and, where needed, `_input_name()`, `_feed()`,
    `_on_eof()` and `_on_timer_action()`.
    """

    connection_type: ClassVar[str]
    role: ClassVar[Role]

    def __init__(
        self,
        *,
        max_block_payload: int = DEFAULT_MAX_PAYLOAD,
        max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
        opening_max: int = DEFAULT_OPENING_MAX,
        opening_timeout: float = DEFAULT_OPENING_TIMEOUT,
    ) -> None:
        key = (self.connection_type, self.role)
        self._table = TABLES[key]
        self._timeouts: dict[State, Timeout] = dict(TIMEOUTS[key])
        if State.OPENING in self._timeouts:
            self._timeouts[State.OPENING] = self._timeouts[State.OPENING]._replace(seconds=opening_timeout)
        self._expects_input = {
            s for (s, name), (_t, d) in self._table.items() if d == "receive" and name != CLOSE_INPUT
        }
        self._state = INITIAL
        self._events: collections.deque[ev.Event] = collections.deque()
        self._blocks = BlockReader(max_block_payload)
        self._max_block_payload = max_block_payload
        self._max_decompressed = max_decompressed
        self._opening_max = opening_max
        self._cipher: AesBlockCipher | None = None
        self._error: ProtocolError | None = None
        self._eof = False
        self._close_reason = "closed"
        self._now: float | None = None
        self._deadline: float | None = None
        self._last_write: float | None = None

    # ------------------------------------------------------------------------------------------- public API

    @property
    def state(self) -> State:
        """The current `State`."""
        return self._state

    @property
    def error(self) -> ProtocolError | None:
        """The error that closed the machine, if any."""
        return self._error

    def set_timeout(self, state: State, seconds: float) -> None:
        """Change the timeout of `state` (e.g. the service client's `client_server_receiver_timeout`).

        Raises LocalProtocolError when the state has no timeout in this machine's table.
        """
        if state not in self._timeouts:
            raise LocalProtocolError(f"{state.name} has no timeout in {self.connection_type} {self.role.value}")
        self._timeouts[state] = self._timeouts[state]._replace(seconds=float(seconds))

    def receive_data(self, data: bytes | bytearray | memoryview, now: float | None = None) -> None:
        """Hand over bytes read from the peer (b"" when the peer closed). Parsing happens in `next_event()`.

        Raises the stored error when the machine failed; LocalProtocolError for data after EOF.
        """
        self._tick(now)
        if self._error is not None:
            raise self._error
        if self._eof and data:
            raise LocalProtocolError("data received after EOF")
        if not data:
            self._eof = True
            return
        if self._state is State.CLOSED:
            return  # the reference stops reading once it decided to close; late bytes are dropped
        try:
            self._feed(bytes(data))
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def next_event(self, now: float | None = None) -> ev.Event | object:
        """Return the next event, or NEED_DATA.

        Raises RemoteProtocolError (the machine is then CLOSED; `encode_reply()` gives what to answer).
        """
        self._tick(now)
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        if self._state is State.CLOSED:
            return ev.ConnectionClosed(self._close_reason)
        try:
            if self._state in self._expects_input:
                self._parse()
            if not self._events and self._eof and self._state is not State.CLOSED:
                self._on_eof()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        except ev.InvalidEvent as exc:
            # An event built from peer data failed its validation: that is the peer's fault.
            err = RemoteProtocolError(str(exc))
            self._fail(err)
            raise err from exc
        if self._events:
            return self._events.popleft()
        return ev.NEED_DATA

    def send(self, event: ev.Event, now: float | None = None) -> bytes:
        """Return the bytes to write for `event` and move the state.

        Raises LocalProtocolError when the event is not allowed now or cannot be encoded (nothing changes).
        """
        self._tick(now)
        if not isinstance(event, ev.Event):
            raise LocalProtocolError(f"not an event: {event!r}")
        if self._state is State.CLOSED:
            raise LocalProtocolError(f"cannot send {type(event).__name__}: connection is closed")
        name = self._input_name(event)
        self._lookup(name, "send")
        data = self._encode(event)
        if isinstance(event, ev.ConnectionClosed):
            self._close_reason = event.reason
        self._move(name, sent=True)
        return data

    def get_timer(self) -> float | None:
        """Return the deadline (same clock as `now`) at which `handle_timer` must be called, or None."""
        return self._deadline

    def handle_timer(self, now: float) -> bytes:
        """Run the action of an expired deadline; return bytes to write (b"" when none).

        Expiry of a "close" timeout queues ConnectionClosed("timeout") and closes the machine.
        """
        self._tick(now)
        if self._deadline is None or now < self._deadline or self._state is State.CLOSED:
            return b""
        timeout = self._timeouts[self._state]
        self._deadline = None
        if timeout.action == "close":
            self._close_reason = "timeout"
            self._move(CLOSE_INPUT, sent=False)
            self._events.append(ev.ConnectionClosed("timeout"))
            return b""
        return self._on_timer_action(timeout.action, now)

    def encode_reply(self, error: RemoteProtocolError) -> bytes:
        """Return the bytes the protocol prescribes for `error` on this connection (b"" when none):
        a plain block, an AES block with this connection's key, or raw bytes (`reply_mode` None)."""
        if error.reply is None:
            return b""
        if error.reply_mode == "plain":
            return encode_block(error.reply)
        if error.reply_mode == "aes":
            if self._cipher is None:
                raise LocalProtocolError("no AES key on this connection")
            return self._aes_block(error.reply)
        return bytes(error.reply)

    # ------------------------------------------------------------------------------------ for subclasses

    def _feed(self, data: bytes) -> None:
        """Default input path: the block reader."""
        self._blocks.receive_data(data)
        self._check_unsolicited()

    def _check_unsolicited(self) -> None:
        # Bytes the peer sends while it is our turn stay in the reader; cap them so a flooding peer cannot grow
        # our buffers (at most one maximal block may wait).
        if self._state not in self._expects_input and self._blocks.buffered > HEADER_SIZE + self._max_block_payload:
            raise RemoteProtocolError("too much data while not expecting any")

    def _parse(self) -> None:
        raise NotImplementedError

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ConnectionClosed):
            return b""
        raise LocalProtocolError(f"{type(event).__name__} cannot be sent on {self.connection_type}")

    def _input_name(self, event: ev.Event) -> str:
        return type(event).__name__

    def _on_eof(self) -> None:
        self._receive(ev.ConnectionClosed("eof"))
        self._close_reason = "eof"

    def _on_timer_action(self, action: str, now: float) -> bytes:  # pragma: no cover - per machine
        raise LocalProtocolError(f"no timer action {action!r} in {type(self).__name__}")

    def _receive(self, event: ev.Event) -> None:
        """Apply a peer event to the state and queue it for `next_event()`."""
        name = self._input_name(event)
        self._lookup(name, "receive")
        self._move(name, sent=False)
        self._events.append(event)

    def _next_block(self, mode: str) -> bytes | None:
        """Return the next complete block's payload decoded per `mode` ("plain", "aes"), checksum verified."""
        got = self._blocks.next_block()
        if got is None:
            return None
        header, payload = got
        if mode == "aes":
            if self._cipher is None:  # pragma: no cover - machines install keys before the data phase
                raise LocalProtocolError("AES block expected before keys were set")
            payload = self._cipher.decrypt(payload)
        verify_checksum(header, payload)
        return payload

    def _aes_block(self, payload: bytes) -> bytes:
        assert self._cipher is not None
        return encode_block(self._cipher.encrypt(payload), byte_sum(payload))

    def _set_keys(self, aes_ckey: str, aes_ivec: str) -> None:
        """Install the connection's AES key strings (first 16 bytes of each are used, spec §3).

        Raises RemoteProtocolError when they are too short to use or have no byte form (a lone surrogate from a
        JSON `\\ud800` escape).
        """
        self._cipher = AesBlockCipher(key_string_bytes(aes_ckey, "aes_ckey"), key_string_bytes(aes_ivec, "aes_ivec"))

    def _require_now(self, what: str) -> float:
        if self._now is None:
            raise LocalProtocolError(f"{what} needs the current time: pass now= to receive_data/next_event")
        return self._now

    # ------------------------------------------------------------------------------------------ internals

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self._now = float(now)

    def _lookup(self, name: str, direction: str) -> State:
        entry = self._table.get((self._state, name))
        if entry is None or entry[1] not in (direction, "both"):
            what = f"{name} in state {self._state.name} of {self.connection_type} {self.role.value}"
            if direction == "send":
                raise LocalProtocolError(f"cannot send {what}")
            raise RemoteProtocolError(f"unexpected {what}")
        return entry[0]

    def _move(self, name: str, *, sent: bool) -> None:
        old = self._state
        new = self._table[(old, name)][0]
        self._state = new
        if sent and self._now is not None:
            self._last_write = self._now
        timeout = self._timeouts.get(new)
        if new is State.CLOSED or timeout is None or timeout.seconds is None:
            if new is not old:
                self._deadline = None
            return
        if self._now is None:
            return
        if timeout.clock == "write":
            base = self._last_write if self._last_write is not None else self._now
            self._deadline = base + timeout.seconds
        elif new is not old or timeout.clock == "idle":
            self._deadline = self._now + timeout.seconds

    def _fail(self, exc: ProtocolError) -> None:
        self._error = exc
        self._state = State.CLOSED
        self._deadline = None
        self._events.clear()
