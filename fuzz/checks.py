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


def _is_int_digits_limit(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "integer string conversion" in str(exc)


def _is_surrogate_key(exc: BaseException) -> bool:
    return isinstance(exc, UnicodeEncodeError) and "surrogates not allowed" in str(exc)


def _is_store_time_encode(exc: BaseException) -> bool:
    return isinstance(exc, UnicodeEncodeError) and exc.encoding == "ascii" and any(
        frame.name == "encode_store_message" for frame in _frames(exc))


def _frames(exc: BaseException) -> list:
    import traceback

    return list(traceback.extract_tb(exc.__traceback__))


def _finding(kind: str) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, FuzzFinding) and exc.kind == kind


KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        "atoi-digit-limit",
        "vmjson.atoi raises ValueError (Python's 4300-digit int limit) on a long digit run from the peer: "
        "store id_main / L<len>, query result errno, credentials fields",
        "tests/fuzz/test_regressions.py::test_atoi_long_digit_run",
        _is_int_digits_limit,
    ),
    KnownIssue(
        "pb-uncompressed-size-cap",
        "validate_container accepts a compressed container whose declared size is over 256 MiB (spec §9.8 "
        "row 10 says `too big`); decode_container then allocates the declared size (4 GiB: process abort)",
        "tests/fuzz/test_regressions.py::test_container_declared_size_over_cap",
        _finding("pb-size-cap"),
    ),
    KnownIssue(
        "opening-line-cap",
        "OpeningReader accepts a line longer than max_size when its terminator arrives in the same read "
        "(spec §1.4: close after 65 536 bytes without a terminator)",
        "tests/fuzz/test_regressions.py::test_opening_line_cap_single_read",
        _finding("opening-cap"),
    ),
    KnownIssue(
        "surrogate-key-strings",
        "credentials whose aes_ckey/aes_ivec hold a JSON \\ud800 escape make the key install raise "
        "UnicodeEncodeError instead of a wire error",
        "tests/fuzz/test_regressions.py::test_credentials_lone_surrogate_key",
        _is_surrogate_key,
    ),
    KnownIssue(
        "store-item-amplification",
        "decode_store_message: an L<len> item with a length that wraps (4294967295, -1) advances by 0 bytes "
        "but takes the rest of the text, so N items copy O(N * len) bytes: 60 kB -> 143 MiB of queries "
        "(per-connection memory no longer bounded by the caps, spec §17.5)",
        "tests/fuzz/test_regressions.py::test_store_item_length_wrap_amplification",
        _finding("store-size"),
    ),
    KnownIssue(
        "pb-layout-unchecked",
        "validate_container accepts an uncompressed container whose packet caplen runs past the data area "
        "(spec §9.3 layout, §9.8 row 10 `bad offsets`); the block is acknowledged, then decode_container fails",
        "tests/fuzz/test_regressions.py::test_container_caplen_past_area_refused",
        _finding("pb-validate-decode"),
    ),
    KnownIssue(
        "store-encode-nonascii-time",
        "encode_store_message raises UnicodeEncodeError (not LocalProtocolError) for a client_time with "
        "non-ASCII characters, e.g. one decoded from a peer's message",
        "tests/fuzz/test_regressions.py::test_store_encode_non_ascii_time",
        _is_store_time_encode,
    ),
)


def known_issue(exc: BaseException) -> KnownIssue | None:
    """Return the catalogue entry ``exc`` belongs to, or None for a new finding."""
    for issue in KNOWN_ISSUES:
        if issue.matches(exc):
            return issue
    return None
