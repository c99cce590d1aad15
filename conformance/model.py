"""What a conformance case is, and what running one produces.

A case is an async function with metadata: a stable id, a title, the spec sections it checks (`§N.M`), a level,
and the role of the implementation under test (`central` when the suite plays sensor/GUI, `sensor` when the suite
plays the central). Reference-quirk cases also say what the reference does and what vmproto does; such a case
returns which of the two the implementation showed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CASES",
    "Case",
    "CaseFailed",
    "CaseSkipped",
    "Level",
    "Outcome",
    "Quirk",
    "Result",
    "case",
    "check",
    "check_bytes_eq",
    "check_eq",
    "fail",
    "skip",
]


class Level(enum.StrEnum):
    """How binding a case is; only MUST cases decide the exit code."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    QUIRK = "reference-quirk"


class Outcome(enum.StrEnum):
    """Result of one case. ERROR means the suite itself could not finish the case (counts as not passed)."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Quirk:
    """A reference quirk: what the reference sniffer does and what vmproto does instead (spec §16)."""

    ref: str  # e.g. "Q2"; "" when the difference is a vmproto hardening without a quirk number
    reference: str
    vmproto: str


class CaseFailed(Exception):
    """The implementation did something the case does not allow; the message says what."""


class CaseSkipped(Exception):
    """The case cannot run against this target (missing option, timeout too long for the time scale, ...)."""


CaseFunc = Callable[[Any], Awaitable["str | None"]]


@dataclass(frozen=True, slots=True)
class Case:
    """One registered case. `mode` is the CLI mode that runs it: "server" (target is a central) or "sensor"."""

    id: str
    title: str
    sections: tuple[str, ...]
    level: Level
    role: str
    mode: str
    func: CaseFunc = field(repr=False, compare=False)
    quirk: Quirk | None = None
    slow: bool = False

    def matches(self, pattern: str) -> bool:
        """True when `pattern` (a regular expression) is found in the id, in one section, or in the title."""
        return any(re.search(pattern, text) for text in (self.id, *self.sections, self.title))


@dataclass(slots=True)
class Result:
    """The outcome of one case against one target."""

    case: Case
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0
    # For quirk cases: "reference" or "vmproto" (which behaviour the implementation showed), else None.
    variant: str | None = None

    @property
    def blocking(self) -> bool:
        """True when this result makes the run fail: a MUST case that did not pass."""
        return self.case.level is Level.MUST and self.outcome in (Outcome.FAIL, Outcome.ERROR)


# mode -> case id -> Case; filled by the @case decorator when conformance.cases is imported.
CASES: dict[str, dict[str, Case]] = {"server": {}, "sensor": {}}

_SECTION = re.compile(r"§\d+(\.\d+)?( Q\d+)?")


def case(
    id: str,
    title: str,
    sections: str | tuple[str, ...],
    level: Level = Level.MUST,
    *,
    mode: str = "server",
    role: str | None = None,
    quirk: Quirk | None = None,
    slow: bool = False,
) -> Callable[[CaseFunc], CaseFunc]:
    """Register the decorated coroutine function as a case; returns it unchanged.

    Raises ValueError for a duplicate id, a section not written `§N` / `§N.M`, or a quirk case without `quirk`.
    """
    secs = (sections,) if isinstance(sections, str) else tuple(sections)

    def register(func: CaseFunc) -> CaseFunc:
        if mode not in CASES:
            raise ValueError(f"unknown mode {mode!r}")
        if id in CASES[mode]:
            raise ValueError(f"duplicate case id {id!r}")
        for s in secs:
            if not _SECTION.fullmatch(s):
                raise ValueError(f"case {id}: section {s!r} is not written like §8 or §8.5")
        if (level is Level.QUIRK) != (quirk is not None):
            raise ValueError(f"case {id}: reference-quirk cases and only they carry a Quirk")
        CASES[mode][id] = Case(id, title, secs, level, role or ("central" if mode == "server" else "sensor"),
                               mode, func, quirk, slow)
        return func

    return register


def fail(message: str) -> None:
    """Raise CaseFailed(message)."""
    raise CaseFailed(message)


def skip(message: str) -> None:
    """Raise CaseSkipped(message)."""
    raise CaseSkipped(message)


def check(condition: object, message: str) -> None:
    """Raise CaseFailed(message) unless `condition` is true."""
    if not condition:
        raise CaseFailed(message)


def check_eq(got: object, expected: object, what: str) -> None:
    """Raise CaseFailed saying `what` was `got` instead of `expected` unless they are equal."""
    if got != expected:
        raise CaseFailed(f"{what}: expected {expected!r}, got {got!r}")


def check_bytes_eq(got: bytes, expected: bytes, what: str) -> None:
    """Raise CaseFailed unless two byte strings are equal; the message gives the lengths and the first
    difference with a little context instead of both strings in full."""
    if got == expected:
        return
    n = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    lo = max(0, n - 16)
    raise CaseFailed(f"{what}: {len(got)} bytes instead of {len(expected)}, first difference at byte {n}: "
                     f"expected …{expected[lo:n + 24]!r}, got …{got[lo:n + 24]!r}")
