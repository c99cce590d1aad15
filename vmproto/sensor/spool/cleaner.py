"""The spool cleaner: keeps the spool within the `maxpool*` limits, deleting the oldest files first.

The reference cleans by hour; vmproto deletes by minute unit (`YYYY-MM-DD/HH/MM`), so a size limit is
overshot by at most one minute of traffic. Rules, per spool directory, applied in this order:

1. `maxpooldays`: units that ended more than N days ago go entirely; `maxpoolsipdays` / `maxpoolrtpdays`
   remove only their type directories (SIP-like / RTP) from such units.
2. `maxpoolsize`: while the spool holds more than N MB, the oldest unit goes entirely.
3. `maxpoolsipsize` / `maxpoolrtpsize`: while that type holds more than N MB, its directory in the oldest
   unit that has one goes.

Units holding files of calls still open are never touched (their files are being written). Ages use the
wall clock, as in the reference.

`plan_cleanup` decides (pure, from an index snapshot); `execute_plan` deletes (blocking, worker thread);
`SpoolCleaner` runs both periodically from Trio.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from vmproto.logs import log_event

from .index import SpoolIndex, UnitUsage
from .layout import file_type_of_dir, unit_start
from .options import SpoolLimits

__all__ = ["CleanupAction", "SpoolCleaner", "execute_plan", "plan_cleanup"]

log = logging.getLogger("vmproto.sensor.spool")

MB = 1 << 20


@dataclass(frozen=True, slots=True)
class CleanupAction:
    """Delete `unit` of spool `spool_index`: all of it (`type_dirs` empty) or only those type directories."""

    spool_index: int
    unit: str
    type_dirs: tuple[str, ...] = ()
    reason: str = ""
    bytes: int = 0


@dataclass(slots=True)
class _Unit:
    start: int
    busy: bool
    types: dict[str, UnitUsage] = field(default_factory=dict)

    def size(self, size_class: str | None = None) -> int:
        return sum(u.bytes for t, u in self.types.items() if size_class is None or file_type_of_dir(t) == size_class)

    def dirs(self, size_class: str) -> tuple[str, ...]:
        return tuple(sorted(t for t in self.types if file_type_of_dir(t) == size_class))


def plan_cleanup(snapshot: dict[tuple[int, str], dict[str, UnitUsage]], limits: SpoolLimits, now_s: float,
                 busy_units: frozenset[str] = frozenset()) -> list[CleanupAction]:
    """Return the deletions that bring every spool within `limits` (see the module docstring)."""
    actions: list[CleanupAction] = []
    by_spool: dict[int, dict[str, _Unit]] = {}
    for (si, unit), types in snapshot.items():
        start = unit_start(unit)
        if start is None:
            continue
        # Busy units count towards the totals but are never deleted.
        by_spool.setdefault(si, {})[unit] = _Unit(start, unit in busy_units,
                                                  {t: UnitUsage(u.bytes, u.files) for t, u in types.items()})
    for si, units in sorted(by_spool.items()):
        order = sorted((u for u in units if not units[u].busy), key=lambda u: units[u].start)

        def drop(unit: str, reason: str, size_class: str | None = None, *, _si: int = si,
                 _units: dict[str, _Unit] = units) -> None:
            entry = _units[unit]
            if size_class is None:
                actions.append(CleanupAction(_si, unit, (), reason, entry.size()))
                del _units[unit]
                return
            dirs = entry.dirs(size_class)
            if not dirs:
                return
            actions.append(CleanupAction(_si, unit, dirs, reason, entry.size(size_class)))
            for t in dirs:
                del entry.types[t]
            if not entry.types:
                del _units[unit]

        for days, size_class, name in ((limits.maxpooldays, None, "maxpooldays"),
                                       (limits.maxpoolsipdays, "sip", "maxpoolsipdays"),
                                       (limits.maxpoolrtpdays, "rtp", "maxpoolrtpdays")):
            if not days:
                continue
            cutoff = now_s - days * 86400
            for unit in order:
                if unit in units and units[unit].start + 60 <= cutoff:
                    drop(unit, name, size_class)
        for limit_mb, size_class, name in ((limits.maxpoolsize, None, "maxpoolsize"),
                                           (limits.maxpoolsipsize, "sip", "maxpoolsipsize"),
                                           (limits.maxpoolrtpsize, "rtp", "maxpoolrtpsize")):
            if not limit_mb:
                continue
            total = sum(u.size(size_class) for u in units.values())
            for unit in order:
                if total <= limit_mb * MB:
                    break
                if unit not in units:
                    continue
                freed = units[unit].size(size_class)
                if size_class is not None and not units[unit].dirs(size_class):
                    continue
                drop(unit, name, size_class)
                total -= freed
    return actions


def execute_plan(roots: tuple[Path, ...], index: SpoolIndex, actions: list[CleanupAction]) -> int:
    """Delete what `actions` say (blocking) and update `index`; return the bytes freed.

    Directories left empty (type, minute, hour, date) are removed too. Errors are logged and skipped.
    """
    freed = 0
    for action in actions:
        root = roots[action.spool_index]
        unit_dir = root / action.unit
        targets = [unit_dir / t for t in action.type_dirs] if action.type_dirs else [unit_dir]
        ok = True
        for target in targets:
            try:
                shutil.rmtree(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                ok = False
                log_event(log, logging.ERROR, "spool clean failed", path=str(target), error=exc.strerror or str(exc))
        if not ok:
            continue
        for t in action.type_dirs or (None,):
            index.forget(action.spool_index, action.unit, t)
        freed += action.bytes
        log_event(log, logging.INFO, "spool cleaned", unit=action.unit, dirs=",".join(action.type_dirs) or "all",
                  reason=action.reason, bytes=action.bytes)
        # Remove the minute, hour and date directories once empty.
        parent = unit_dir
        for _ in range(3):
            try:
                os.rmdir(parent)
            except FileNotFoundError:
                pass
            except OSError:
                break  # not empty: the levels above are not either
            parent = parent.parent
    return freed


class SpoolCleaner:
    """Runs the cleaner every `interval` seconds, and at once when `wake()` is called.

    `busy_units` gives the units to leave alone (the writer's `busy_units`); `clock` the wall clock.
    """

    def __init__(self, roots: tuple[Path, ...], index: SpoolIndex, limits: SpoolLimits, *, interval: float = 300.0,
                 busy_units: Callable[[], frozenset[str]] = frozenset,
                 clock: Callable[[], float] = time.time) -> None:
        self.roots = roots
        self.index = index
        self.limits = limits
        self.interval = interval
        self.busy_units = busy_units
        self.clock = clock
        self.runs = 0
        self.freed_bytes = 0
        self._wake = trio.Event()

    def wake(self) -> None:
        """Ask for a cleaning pass now (e.g. after much was written)."""
        self._wake.set()

    async def clean_once(self) -> list[CleanupAction]:
        """One pass: plan from the index, delete in a worker thread. Returns what was deleted."""
        actions = plan_cleanup(self.index.snapshot(), self.limits, self.clock(), self.busy_units())
        if actions:
            self.freed_bytes += await trio.to_thread.run_sync(execute_plan, self.roots, self.index, actions)
        self.runs += 1
        return actions

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan the spool directories into the index, then clean periodically until cancelled."""
        for si, root in enumerate(self.roots):
            found = await trio.to_thread.run_sync(self.index.scan, si, root)
            log_event(log, logging.INFO, "spool indexed", spool=str(root), files=found)
        task_status.started()
        if not self.limits.any:
            await trio.sleep_forever()
        while True:
            await self.clean_once()
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
