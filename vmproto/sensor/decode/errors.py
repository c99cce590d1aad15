"""Errors of the packet decoder.

Malformed packets inside a capture never raise out of the decoder: they are counted by kind and skipped.
These exceptions are for the standalone entry points (HEP, IPFIX and AudioCodes parsers, option checks) where
a caller hands us one message and needs to know why it was refused.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """A message could not be decoded. `kind` is a short stable label, also used as the counter name."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


class OptionError(ValueError):
    """A decoder or capture option has a value outside its allowed range or syntax."""
