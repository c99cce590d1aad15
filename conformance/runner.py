"""Run registered cases against a target and collect Results.

Cases run concurrently up to `parallel` at a time (most of them wait on protocol timers, not CPU); each has its
own deadline so that one stuck case cannot stop the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import trio

from .model import CASES, Case, CaseFailed, CaseSkipped, Level, Outcome, Result
from .wirekit import OPEN_WIRES

__all__ = ["run_cases", "select_cases"]


def select_cases(mode: str, only: Iterable[str] = (), *, skip: Iterable[str] = (),
                 include_slow: bool = True) -> list[Case]:
    """Cases of `mode` in id order, filtered by --only patterns (any match keeps a case) and --skip patterns."""
    from . import cases  # noqa: F401  (registers every case)

    patterns = list(only)
    out = []
    for c in sorted(CASES[mode].values(), key=lambda c: c.id):
        if patterns and not any(c.matches(p) for p in patterns):
            continue
        if any(c.matches(p) for p in skip) or (c.slow and not include_slow):
            continue
        out.append(c)
    return out


async def _run_one(c: Case, ctx: Any, deadline: float) -> Result:
    start = time.monotonic()
    result = Result(c, Outcome.PASS)
    opened: list = []
    OPEN_WIRES.set(opened)  # each case runs in its own task, hence its own context
    try:
        with trio.fail_after(deadline):
            variant = await c.func(ctx)
        if c.level is Level.QUIRK:
            if variant not in ("reference", "vmproto"):
                result = Result(c, Outcome.ERROR, f"quirk case returned {variant!r}")
            else:
                shown = c.quirk.reference if variant == "reference" else c.quirk.vmproto  # type: ignore[union-attr]
                result = Result(c, Outcome.PASS, f"showed the {variant} behaviour: {shown}", variant=variant)
    except CaseSkipped as exc:
        result = Result(c, Outcome.SKIP, str(exc))
    except CaseFailed as exc:
        result = Result(c, Outcome.FAIL, str(exc))
    except trio.TooSlowError:
        result = Result(c, Outcome.FAIL, f"case did not finish within {deadline:.0f} s")
    except Exception as exc:  # the suite must report, never crash, whatever the peer does
        result = Result(c, Outcome.ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        with trio.CancelScope(shield=True):
            for wire in opened:
                await wire.aclose()
    result.seconds = time.monotonic() - start
    return result


async def run_cases(cases: list[Case], ctx: Any, *, parallel: int = 8, case_timeout: float = 120.0,
                    progress: Any = None) -> list[Result]:
    """Run `cases` with context `ctx`; return the results in the order of `cases`.

    `progress`, when given, is called with each Result as it completes.
    """
    results: dict[str, Result] = {}
    limiter = trio.CapacityLimiter(max(1, parallel))

    async def one(c: Case) -> None:
        async with limiter:
            res = await _run_one(c, ctx, case_timeout)
        results[c.id] = res
        if progress is not None:
            progress(res)

    async with trio.open_nursery() as nursery:
        for c in cases:
            nursery.start_soon(one, c)
    return [results[c.id] for c in cases]
