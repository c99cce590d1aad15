"""The spool's index: bytes and files per (spool index, unit, type directory).

The cleaner decides from it without walking the tree each time; the writer adds every file it closes.
It is rebuilt from disk at start (`scan`), so files of an earlier run, or copied in by hand, count too.
Thread-safe: the writer's and the cleaner's worker threads update it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .layout import file_type_of_dir, unit_start

__all__ = ["SpoolIndex", "UnitUsage"]


@dataclass(slots=True)
class UnitUsage:
    """Bytes and file count of one type directory of one unit."""

    bytes: int = 0
    files: int = 0


class SpoolIndex:
    """`{(spool_index, unit): {TYPE_DIR: UnitUsage}}`, units being `YYYY-MM-DD/HH/MM`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._units: dict[tuple[int, str], dict[str, UnitUsage]] = {}
        # (spool index, unit) -> TYPE_DIR -> file name -> bytes counted
        self._sizes: dict[tuple[int, str], dict[str, dict[str, int]]] = {}

    def record(self, spool_index: int, relpath: str, size: int) -> None:
        """Count file `relpath` (`unit/TYPE/name`) at `size` bytes, replacing what was counted for it."""
        parts = relpath.split("/")
        if len(parts) < 5:
            return
        unit, type_dir, name = "/".join(parts[:3]), parts[3].upper(), "/".join(parts[4:])
        with self._lock:
            names = self._sizes.setdefault((spool_index, unit), {}).setdefault(type_dir, {})
            old = names.get(name)
            usage = self._units.setdefault((spool_index, unit), {}).setdefault(type_dir, UnitUsage())
            if old is None:
                usage.files += 1
                old = 0
            usage.bytes += size - old
            names[name] = size

    def forget(self, spool_index: int, unit: str, type_dir: str | None = None) -> None:
        """Drop a whole unit, or one type directory of it (after the cleaner deleted it)."""
        with self._lock:
            types = self._units.get((spool_index, unit))
            if types is None:
                return
            sizes = self._sizes.get((spool_index, unit), {})
            for t in [type_dir.upper()] if type_dir else list(types):
                types.pop(t, None)
                sizes.pop(t, None)
            if not types:
                del self._units[(spool_index, unit)]
                self._sizes.pop((spool_index, unit), None)

    def snapshot(self) -> dict[tuple[int, str], dict[str, UnitUsage]]:
        """A copy of the index, safe to read while the writer goes on."""
        with self._lock:
            return {k: {t: UnitUsage(u.bytes, u.files) for t, u in v.items()} for k, v in self._units.items()}

    def total_bytes(self, size_class: str | None = None, spool_index: int | None = None) -> int:
        """Bytes of every file, or of one size class ("sip", "rtp", "other"), optionally of one spool."""
        with self._lock:
            return sum(u.bytes for (si, _), types in self._units.items() if spool_index in (None, si)
                       for t, u in types.items() if size_class is None or file_type_of_dir(t) == size_class)

    def scan(self, spool_index: int, root: Path) -> int:
        """Add every file under `root/YYYY-MM-DD/HH/MM/<TYPE>/` to the index; return the number found.

        Blocking (walks the tree): run it in a worker thread. Unreadable directories are skipped.
        """
        found = 0
        for date in _dirs(root):
            for hour in _dirs(root / date):
                for minute in _dirs(root / date / hour):
                    unit = f"{date}/{hour}/{minute}"
                    if unit_start(unit) is None:
                        continue
                    for type_dir in _dirs(root / unit):
                        if file_type_of_dir(type_dir) is None:
                            continue
                        try:
                            entries = list(os.scandir(root / unit / type_dir))
                        except OSError:
                            continue
                        for entry in entries:
                            try:
                                if entry.is_file(follow_symlinks=False):
                                    self.record(spool_index, f"{unit}/{type_dir}/{entry.name}",
                                                entry.stat(follow_symlinks=False).st_size)
                                    found += 1
                            except OSError:
                                continue
        return found


def _dirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
