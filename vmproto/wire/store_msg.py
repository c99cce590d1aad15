"""Store message syntax and the store channel's fixed replies (spec §8).

A message (before compression) is ``<id_main>|[T<YYYY-MM-DD HH:MM:SS>|]<body>``; the body is one
query, or ``L<len>:<query>\\n`` items when the server asked for batching. Decoding is strict (spec §8.3,
§8.6): a message that breaks the grammar is refused as a whole.
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
    "BadStoreMessage",
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

# time-part = "T" datetime "|" (spec §8.3); ASCII digits only, so a str that matches is also encodable.
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")
_DATETIME_BYTES = re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\|")
_DATETIME_LEN = len("YYYY-MM-DD HH:MM:SS")
_DIGITS = re.compile(rb"[0-9]*")
_HEAD = 64  # bytes of a refused message kept for the log line (spec §8.6)


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """One store message: ``id_main`` (10 = CDR, 1010 = charts cache, ...), the optional sensor
    time text, and its queries. ``batched`` means the body is in ``L<len>:`` items."""

    id_main: int
    client_time: str | None
    queries: tuple[bytes, ...]
    batched: bool = False


class BadStoreMessage(RemoteProtocolError):
    """A store message that breaks the grammar of spec §8.3: it is refused as a whole, without a reply, and the
    connection is closed (spec §8.5 steps 3-4, §8.6). ``reason`` says what is wrong; ``head`` holds the first 64
    bytes of the message for the ``bad store message`` log line."""

    def __init__(self, reason: str, text: bytes) -> None:
        super().__init__(reason, reply=None, reply_mode=None, close=True)
        self.head = bytes(text[:_HEAD])


class BadStoreItems(BadStoreMessage):
    """The ``L<len>:`` items are malformed. ``partial`` holds the items parsed before the defect, for
    tools that show what the reference would have made of the message (it applies those and replies ``OK``,
    spec §16); a vmproto central applies none of them."""

    def __init__(self, reason: str, text: bytes, partial: StoreMessage) -> None:
        super().__init__(reason, text)
        self.partial = partial


def _needs_items(query: bytes, client_time: str | None) -> bool:
    """Would a single body be misread? Then it must travel as an ``L`` item (spec §8.3: a single body never
    starts with ``L`` DIGIT, and without a time part a leading ``T`` DIGIT is read as the start of one)."""
    if query[:1] == b"L" and query[1:2].isdigit():
        return True
    return client_time is None and query[:1] == b"T" and query[1:2].isdigit()


def encode_store_message(msg: StoreMessage) -> bytes:
    """Return the uncompressed message text.

    One query and ``batched`` false -> a single body; otherwise ``L<len>:<q>\\n`` items. A single
    body the server would misparse (starting ``L<digit>``, or ``T<digit>`` without a time part)
    is sent as one item instead. Raises :class:`LocalProtocolError` for no queries, a negative
    ``id_main``, or a ``client_time`` that is not ``YYYY-MM-DD HH:MM:SS`` in ASCII digits.
    """
    if not msg.queries:
        raise LocalProtocolError("a store message needs at least one query")
    if not isinstance(msg.id_main, int) or isinstance(msg.id_main, bool) or msg.id_main < 0:
        raise LocalProtocolError(f"id_main must be a non-negative int, not {msg.id_main!r}")
    parts = [str(int(msg.id_main)).encode("ascii"), b"|"]
    if msg.client_time is not None:
        if not isinstance(msg.client_time, str) or not _DATETIME.match(msg.client_time):
            raise LocalProtocolError(f"bad client_time: {msg.client_time!r} (YYYY-MM-DD HH:MM:SS expected)")
        parts += [b"T", msg.client_time.encode("ascii"), b"|"]
    if len(msg.queries) == 1 and not msg.batched and not _needs_items(msg.queries[0], msg.client_time):
        parts.append(msg.queries[0])
    else:
        for q in msg.queries:
            parts += [b"L", str(len(q)).encode("ascii"), b":", q, b"\n"]
    return b"".join(parts)


def _bounded_decimal(digits: bytes, limit: int) -> int | None:
    """``digits`` (ASCII, non-empty) as an int if it is at most ``limit``, else None -- without converting a
    digit run longer than ``limit`` has digits (a peer's 5 000-digit length costs nothing)."""
    significant = digits.lstrip(b"0")
    if len(significant) > len(str(limit)):
        return None
    value = int(significant or b"0")
    return value if value <= limit else None


def decode_store_message(text: bytes) -> StoreMessage:
    """Parse a decompressed store message strictly (spec §8.3, vmproto central).

    Returns the :class:`StoreMessage`; its queries are slices of ``text``, so they never add up to more
    bytes than the message. ``id_main`` is read like C atoi (a 20-digit id saturates, spec §8.4 accepts any
    decimal id). Raises :class:`BadStoreMessage` (reply none, close) for an empty message
    (``"empty store message"``), no ``|`` (``"missing '|' separator"``), an ``id-main`` that is not
    digits (``"bad id_main"``), a ``T`` DIGIT not followed by ``YYYY-MM-DD HH:MM:SS|`` (``"bad time part"``), and
    :class:`BadStoreItems` for malformed ``L<len>:<item>\\n`` items (``"missing 'L' separator"``,
    ``"missing ':' separator"``, ``"item length past the end"``, ``"missing LF after item"``).
    """
    text = bytes(text)
    if not text:
        raise BadStoreMessage("empty store message", text)
    bar = text.find(b"|")
    if bar < 0:
        raise BadStoreMessage("missing '|' separator", text)
    if bar == 0 or _DIGITS.match(text, 0, bar).end() != bar:  # type: ignore[union-attr]
        raise BadStoreMessage("bad id_main", text)
    id_main = vmjson.atoi(text[:bar].decode("ascii"))
    begin = bar + 1
    client_time: str | None = None
    if text[begin : begin + 1] == b"T" and text[begin + 1 : begin + 2].isdigit():
        if not _DATETIME_BYTES.match(text, begin + 1):
            raise BadStoreMessage("bad time part", text)
        client_time = text[begin + 1 : begin + 1 + _DATETIME_LEN].decode("ascii")
        begin += 2 + _DATETIME_LEN
    if not (text[begin : begin + 1] == b"L" and text[begin + 1 : begin + 2].isdigit()):
        return StoreMessage(id_main, client_time, (text[begin:],), batched=False)
    queries: list[bytes] = []
    pos, n = begin, len(text)

    def bad(reason: str) -> BadStoreItems:
        return BadStoreItems(reason, text, StoreMessage(id_main, client_time, tuple(queries), True))

    while pos < n:
        if text[pos : pos + 1] != b"L":
            raise bad("missing 'L' separator")
        digits_end = _DIGITS.match(text, pos + 1).end()  # type: ignore[union-attr]
        if digits_end == pos + 1 or text[digits_end : digits_end + 1] != b":":
            raise bad("missing ':' separator")
        start = digits_end + 1
        # The item and its LF must fit in what is left: lengths are checked against the remaining bytes, so
        # each item advances by its own size and no length can wrap or reach past the message.
        length = _bounded_decimal(text[pos + 1 : digits_end], n - start - 1)
        if length is None:
            raise bad("item length past the end")
        end = start + length
        if text[end] != 0x0A:
            raise bad("missing LF after item")
        queries.append(text[start:end])
        pos = end + 1
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
