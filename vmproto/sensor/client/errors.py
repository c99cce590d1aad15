"""Errors of the sensor's client side (spec §6-§14). Every failure a caller can see is one of these."""

from __future__ import annotations

__all__ = [
    "ClientError",
    "ConnectFailed",
    "HandshakeRefused",
    "ChannelLost",
    "JournalError",
    "JournalCorrupt",
]


class ClientError(Exception):
    """Base class of the sensor client errors."""


class ConnectFailed(ClientError):
    """No destination accepted a TCP connection (spec §14.3); the text lists what was tried."""


class HandshakeRefused(ClientError):
    """The central refused the handshake (`bad password`, `bad time`, ...); `text` is its reply."""

    def __init__(self, connection_type: str, text: str) -> None:
        super().__init__(f"failed response from server - {text} ({connection_type})")
        self.connection_type = connection_type
        self.text = text


class ChannelLost(ClientError):
    """The connection ended (EOF, timeout, protocol error) while a reply or block was expected.

    `protocol_error` is the wire error when the peer broke the protocol (its `reply` says what to answer)."""

    def __init__(self, message: str, protocol_error: Exception | None = None) -> None:
        super().__init__(message)
        self.protocol_error = protocol_error


class JournalError(ClientError):
    """The store journal cannot be used (directory, permissions, disk full)."""


class JournalCorrupt(JournalError):
    """A journal file holds bytes that are not a valid record (raised only by strict readers)."""
