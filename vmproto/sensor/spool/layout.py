"""Where a call's files live in the spool, and confinement of paths asked for from outside.

Layout (the reference's default `spooldiroldschema = no`, `pcap_split = yes`)::

    <spooldir>/YYYY-MM-DD/HH/MM/SIP/<fbasename>.pcap     SIP of the call
    <spooldir>/YYYY-MM-DD/HH/MM/RTP/<fbasename>.pcap     RTP/RTCP of the call

The date, hour and minute are those of the call's first packet. The reference takes them in the
sensor's local time zone; vmproto uses UTC, the time zone of the `calldate` it writes to the CDR, so the
GUI finds a file from the CDR alone whatever the host's zone. With `pcap_split = no` both kinds go to
one file under `ALL/`. A *unit* is one `YYYY-MM-DD/HH/MM` directory: the cleaner's granularity.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from pathlib import Path

from .errors import SpoolAccessError

__all__ = [
    "SpoolLayout",
    "TYPE_DIRS",
    "file_type_of_dir",
    "unit_of",
    "unit_start",
]

#: The type directories the reference uses, and the cleaner's size class of each.
TYPE_DIRS = {"SIP": "sip", "REG": "sip", "SKINNY": "sip", "MGCP": "sip", "SS7": "sip", "ALL": "sip",
             "RTP": "rtp", "GRAPH": "other", "AUDIO": "other", "AUDIOGRAPH": "other"}

_UNIT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})/(\d{2})/(\d{2})$")


def unit_of(ts_ns: int) -> str:
    """The `YYYY-MM-DD/HH/MM` directory (UTC) of a time in ns since the epoch."""
    return time.strftime("%Y-%m-%d/%H/%M", time.gmtime(ts_ns // 1_000_000_000))


def unit_start(unit: str) -> int | None:
    """The first second (epoch, UTC) of a unit `YYYY-MM-DD/HH/MM`; None when `unit` is not one."""
    m = _UNIT.match(unit)
    if m is None:
        return None
    y, mo, d, h, mi = (int(x) for x in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60):
        return None
    return calendar.timegm((y, mo, d, h, mi, 0, 0, 0, 0))


def file_type_of_dir(type_dir: str) -> str | None:
    """The size class ("sip", "rtp", "other") of a type directory name, None for unknown names."""
    return TYPE_DIRS.get(type_dir.upper())


class SpoolLayout:
    """The spool directories and the naming of per-call files.

    `roots[i]` is the directory of spool index `i`. Paths are returned relative to a root (what the
    manager commands carry) or absolute.
    """

    def __init__(self, roots: tuple[Path, ...] | list[Path], pcap_split: bool = True) -> None:
        if not roots:
            raise ValueError("at least one spool directory is needed")
        self.roots = tuple(Path(r) for r in roots)
        self.pcap_split = pcap_split

    def type_dir(self, kind: str) -> str:
        """The type directory for packets of `kind` ("sip", "rtp" or "rtcp")."""
        if not self.pcap_split:
            return "ALL"
        if kind == "sip":
            return "SIP"
        if kind in ("rtp", "rtcp"):
            return "RTP"
        raise ValueError(f"unknown packet kind {kind!r}")

    def call_relpath(self, fbasename: str, calldate_ns: int, kind: str) -> str:
        """`YYYY-MM-DD/HH/MM/<TYPE>/<fbasename>.pcap` for a call's packets of `kind`.

        `fbasename` must already be in file-name form (no `/`, no NUL); raises ValueError otherwise.
        """
        if not fbasename or "/" in fbasename or "\x00" in fbasename:
            raise ValueError(f"not a file-name form of a Call-ID: {fbasename!r}")
        return f"{unit_of(calldate_ns)}/{self.type_dir(kind)}/{fbasename}.pcap"

    def root(self, spool_index: int = 0) -> Path:
        """The directory of `spool_index`. Raises SpoolAccessError for an index not configured."""
        if not 0 <= spool_index < len(self.roots):
            raise SpoolAccessError(f"no spool directory with index {spool_index}")
        return self.roots[spool_index]

    def resolve(self, path: str, spool_index: int = 0) -> Path:
        """The file a manager command means by `path` (relative to spool `spool_index`).

        Stricter than the reference (spec §13.4, §17): refused with SpoolAccessError are NUL bytes,
        any `..` component, absolute paths not under a spool directory, and paths whose real location
        (symlinks followed) leaves the spool directory. The file need not exist.
        """
        if not path or "\x00" in path:
            raise SpoolAccessError("empty path or NUL byte in path")
        if ".." in path.replace("\\", "/").split("/"):
            raise SpoolAccessError(f"'..' in path {path!r}")
        root = self.root(spool_index)
        if os.path.isabs(path):
            candidate = Path(path)
            if not any(self._inside(candidate, r) for r in self.roots):
                raise SpoolAccessError(f"absolute path outside the spool: {path!r}")
            return candidate
        candidate = root / path
        if not self._inside(candidate, root):
            raise SpoolAccessError(f"path leaves the spool through a symlink: {path!r}")
        return candidate

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """True when `path` (absolute, symlinks followed) lies inside one of the spool directories."""
        p = Path(path)
        return p.is_absolute() and ".." not in p.parts and any(self._inside(p, r) for r in self.roots)

    @staticmethod
    def _inside(candidate: Path, root: Path) -> bool:
        real_root = os.path.realpath(root)
        real = os.path.realpath(candidate)
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)
