"""Store message syntax and the store channel's fixed replies (spec §8).

A message (before compression) is ``<id_main>|[T<YYYY-MM-DD HH:MM:SS>|]<body>``; the body is one
query, or ``L<len>:<query>\\n`` items when the server asked for batching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import vmjson
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CHECK",
    "CLIENT_TIME_TOO_GREAT_REPLY",
    "STORE_CONNECT_REPLY",
    "BadStoreItems",
    "StoreMessage",
    "decode_store_message",
    "encode_store_message",
    "queue_full_reply",
    "queue_full_usleep",
]

CHECK = b"check"
STORE_CONNECT_REPLY = b'{"rslt":"OK","check_store":1,"check_time":1}'
CLIENT_TIME_TOO_GREAT_REPLY = vmjson.dumps(
    {"error": "client time is too greater than server time", "next_attempt": False}
)
OK = b"OK"

# The server looks for the time's closing '|' at most 20 characters after the 'T'.
_MAX_TIME_SPAN = 20
_LEADING_INT = re.compile(rb"[ \t\n\v\f\r]*[+-]?[0-9]*")


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """One store message: ``id_main`` (10 = CDR, 1010 = charts cache, ...), the optional sensor
    time text, and its queries. ``batched`` means the body is in ``L<len>:`` items."""

    id_main: int
    client_time: str | None
    queries: tuple[bytes, ...]
    batched: bool = False


class BadStoreItems(RemoteProtocolError):
    """The ``L<len>:`` items broke off. ``partial`` holds the queries parsed before the error:
    the reference enqueues those and still replies ``OK`` (spec §8)."""

    def __init__(self, reason: str, partial: StoreMessage) -> None:
        super().__init__(reason, reply=OK, reply_mode="aes", close=False)
        self.partial = partial


def _needs_items(query: bytes, client_time: str | None) -> bool:
    """Would the server misread this single body? Then it must travel as an ``L`` item."""
    if len(query) >= 2 and query[:1] == b"L" and query[1:2].isdigit():
        return True
    if client_time is None and len(query) >= 2 and query[:1] == b"T" and query[1:2].isdigit():
        bar = query.find(b"|")
        return 0 <= bar <= _MAX_TIME_SPAN
    return False


def encode_store_message(msg: StoreMessage) -> bytes:
    """Return the uncompressed message text.

    One query and ``batched`` false -> a single body; otherwise ``L<len>:<q>\\n`` items. A single
    body the server would misparse (starting ``L<digit>``, or ``T<digit>...|`` without a time part)
    is sent as one item instead. Raises :class:`LocalProtocolError` for no queries or a bad time.
    """
    if not msg.queries:
        raise LocalProtocolError("a store message needs at least one query")
    parts = [str(int(msg.id_main)).encode("ascii"), b"|"]
    if msg.client_time is not None:
        t = msg.client_time.encode("ascii")
        if b"|" in t or not t[:1].isdigit() or len(t) + 1 > _MAX_TIME_SPAN:
            raise LocalProtocolError(f"bad client_time: {msg.client_time!r}")
        parts += [b"T", t, b"|"]
    if len(msg.queries) == 1 and not msg.batched and not _needs_items(msg.queries[0], msg.client_time):
        parts.append(msg.queries[0])
    else:
        for q in msg.queries:
            parts += [b"L", str(len(q)).encode("ascii"), b":", q, b"\n"]
    return b"".join(parts)


def _atoi_bytes(text: bytes, pos: int) -> int:
    m = _LEADING_INT.match(text, pos)
    return vmjson.atoi(m.group().decode("ascii")) if m else 0


def decode_store_message(text: bytes) -> StoreMessage:
    """Parse a decompressed store message as the reference server does.

    Raises :class:`RemoteProtocolError` ``"missing '|' separator"`` (the reference then stays silent:
    ``reply=None``, ``close=False``) and :class:`BadStoreItems` with the reference's log texts
    ``"missing 'L' separator"`` / ``"missing ':' separator"``.
    """
    text = bytes(text)
    if not text:
        raise RemoteProtocolError("empty store message", close=False)
    bar = text.find(b"|")
    if bar < 0:
        raise RemoteProtocolError("missing '|' separator", close=False)
    id_main = _atoi_bytes(text, 0)
    begin = bar + 1
    client_time: str | None = None
    if text[begin : begin + 1] == b"T" and text[begin + 1 : begin + 2].isdigit():
        time_bar = text.find(b"|", begin)
        if time_bar >= 0 and time_bar - begin <= _MAX_TIME_SPAN:
            client_time = text[begin + 1 : time_bar].decode("latin-1")
            begin = time_bar + 1
    if not (text[begin : begin + 1] == b"L" and text[begin + 1 : begin + 2].isdigit()):
        return StoreMessage(id_main, client_time, (text[begin:],), batched=False)
    queries: list[bytes] = []
    pos, n = begin, len(text)
    while True:
        if text[pos : pos + 1] != b"L":
            raise BadStoreItems("missing 'L' separator", StoreMessage(id_main, client_time, tuple(queries), True))
        length = _atoi_bytes(text, pos + 1)
        sep = text.find(b":", pos)
        if sep < 0:
            raise BadStoreItems("missing ':' separator", StoreMessage(id_main, client_time, tuple(queries), True))
        pos = sep + 1
        # The reference's length is unsigned: a negative atoi wraps to a huge value (rest of text).
        take = length if length >= 0 else n
        queries.append(text[pos : pos + take])
        # unsigned 32-bit arithmetic, as in the reference (length -1 advances by 0)
        pos += ((length & 0xFFFFFFFF) + 1) & 0xFFFFFFFF
        if pos >= n:
            break
    return StoreMessage(id_main, client_time, tuple(queries), batched=True)


def queue_full_usleep(sleep_ms: int, rnd: int) -> int:
    """The reference's back-off for a full queue: ``sleep_ms * (300 + rnd) / 400 * 1000`` in integer
    math (``rnd`` is the caller's random 0..99), e.g. 750000..997000 µs for 1000 ms."""
    if not 0 <= rnd <= 99:
        raise LocalProtocolError("rnd must be in 0..99")
    return sleep_ms * (300 + rnd) // 400 * 1000


def queue_full_reply(usleep_us: int) -> bytes:
    """Return the AES-block JSON telling a sensor the server's SQL queue is full (spec §8)."""
    return vmjson.dumps(
        {"error": "sql queue is full", "next_attempt": True, "usleep": int(usleep_us), "quietly": True,
         "keep_connect": True}
    )
