"""Errors of the capture inspector.

Problems inside one message (a bad checksum, a wrong key, a truncated block) are not exceptions: they become
`kind: "error"` entries of the transcript. `InspectError` is for problems that stop the whole run: a file that is
not a capture at all, an unreadable key file, bad command-line values.
"""

from __future__ import annotations


class InspectError(Exception):
    """The inspector cannot run: bad capture file, bad key file or bad arguments. `str()` is the reason."""
