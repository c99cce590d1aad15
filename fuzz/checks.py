"""Invariants shared by every harness, and the catalogue of findings already reported.

A harness run may end in three ways: normally, with a :class:`vmproto.wire.errors.ProtocolError` (the only
exceptions a parser may raise, spec §15.1: swallowed by the harness), or with anything else -- a crash, which
the fuzzer reports. Broken invariants that are not exceptions of the code under test (a buffer over its cap,
an accepted input the spec says must be refused, a round trip that changes the value) raise
:class:`FuzzFinding` with a short ``kind``.

:data:`KNOWN_ISSUES` lists crashes already reported with a regression test in ``tests/fuzz``. The runner and the
short mode skip them (counting them) so one known bug does not hide the next; ``--strict`` turns that off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmproto.wire.errors import ProtocolError

__all__ = [
    "CAPS",
    "KNOWN_ISSUES",
    "MAX_PEAK_BYTES",
    "FuzzFinding",
    "KnownIssue",
    "expect",
    "known_issue",
    "wire_errors_only",
]

# Caps the machines are built with while fuzzing: small, so "buffered stays under the cap" is checked at sizes
# a fuzzer reaches, and a bomb that ignored them would show at once in the memory figures.
CAPS = {"max_block_payload": 64 * 1024, "max_decompressed": 1024 * 1024, "opening_max": 4096}
# Python heap a single harness run may reach (tracemalloc peak in the short mode): the caps above plus the
# copies a block makes on its way through framing, AES, decompression and parsing.
MAX_PEAK_BYTES = 48 * 1024 * 1024


class FuzzFinding(AssertionError):
    """An invariant broken without an exception from the code under test. ``kind`` names the invariant."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def expect(condition: bool, kind: str, detail: str) -> None:
    """Raise :class:`FuzzFinding` ``kind`` when ``condition`` is false."""
    if not condition:
        raise FuzzFinding(kind, detail)


def wire_errors_only(call: Callable[[], object]) -> object | None:
    """Run ``call``; return its result, or None when it raised a wire error. Anything else propagates."""
    try:
        return call()
    except ProtocolError:
        return None


@dataclass(frozen=True)
class KnownIssue:
    """A reported finding: how to recognise it, and the regression test that pins it."""

    id: str
    summary: str
    test: str
    matches: Callable[[BaseException], bool]


# Crashes reported and not yet fixed (each with a strict-xfail regression test in tests/fuzz). Fixed ones leave this
# list: their regression tests then guard them, and the runner reports a recurrence as a new finding.
KNOWN_ISSUES: tuple[KnownIssue, ...] = ()


def known_issue(exc: BaseException) -> KnownIssue | None:
    """Return the catalogue entry ``exc`` belongs to, or None for a new finding."""
    for issue in KNOWN_ISSUES:
        if issue.matches(exc):
            return issue
    return None
