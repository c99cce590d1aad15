"""Errors of the capture layer."""

from __future__ import annotations


class CaptureError(Exception):
    """libpcap refused an operation, or a capture source could not be opened or read."""


class CaptureFormatError(CaptureError):
    """A capture file is not pcap/pcapng or is corrupt. `offset` is where reading stopped."""

    def __init__(self, message: str, offset: int = 0) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte {offset})")


class CaptureOptionError(CaptureError, ValueError):
    """A capture option (interface, filter, snaplen, sipport, ...) has an invalid value."""
