"""Exception types of the wire core (spec §15).

Every bad input that reaches a codec or a state machine ends in one of these, never in a stray
``ValueError``/``struct.error``: the Trio layer only has to catch :class:`ProtocolError`.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]

ReplyMode = Literal["plain", "aes"]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`vmproto.wire`."""


class LocalProtocolError(ProtocolError):
    """We misused the API (e.g. a plaintext too long for RSA, an event sent in the wrong state)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    ``reason`` is the reference's own error or log string where it has one (``"bad block header"``,
    ``"bad checksum"``, ``"bad password"``, the packetbuffer texts of spec §9 ...), so logs and tests
    can match the real sniffer. ``reply`` is the payload the protocol prescribes as the answer
    (``None``: answer nothing), sent as a plain or AES block according to ``reply_mode``. ``close``
    says whether the connection must be closed after the reply.
    """

    def __init__(
        self,
        reason: str,
        *,
        reply: bytes | None = None,
        reply_mode: ReplyMode | None = None,
        close: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
        self.reply_mode = reply_mode
        self.close = close

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.reason!r}, reply={self.reply!r}, "
            f"reply_mode={self.reply_mode!r}, close={self.close!r})"
        )
