"""Capture options, named after the reference's configuration keys.

Defaults follow the reference: ``snaplen`` 3200, ``promisc`` on, ``ringbuffer`` 50 MB (libpcap's own 2 MB
default drops packets under load), ``sipport`` 5060.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from .errors import CaptureOptionError

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def parse_port_list(text: str) -> frozenset[int]:
    """Parse a ``sipport`` value: ports and ranges separated by commas, e.g. ``"5060,5061-5065"``.

    Returns the set of ports; raises `CaptureOptionError` for syntax errors, ports outside 1..65535 or
    reversed ranges.
    """
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        lo_s, sep, hi_s = item.partition("-")
        try:
            lo = int(lo_s.strip())
            hi = int(hi_s.strip()) if sep else lo
        except ValueError:
            raise CaptureOptionError(f"bad port or range {item!r} in {text!r}") from None
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
            raise CaptureOptionError(f"port range {item!r} outside 1..65535 or reversed")
        ports.update(range(lo, hi + 1))
    if not ports:
        raise CaptureOptionError(f"no port in {text!r}")
    return frozenset(ports)


def parse_interfaces(text: str) -> tuple[str, ...]:
    """Parse an ``interface`` value: one NIC, ``any``, or a comma list. Raises `CaptureOptionError`."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise CaptureOptionError("interface must name at least one device")
    for n in names:
        if not _IFNAME.match(n):
            raise CaptureOptionError(f"bad interface name {n!r}")
    if "any" in names and len(names) > 1:
        raise CaptureOptionError("'any' already captures every interface; do not combine it with others")
    if len(set(names)) != len(names):
        raise CaptureOptionError(f"interface listed twice in {text!r}")
    return names


class Replay(enum.Enum):
    """How a capture file is replayed: as fast as possible, or at the pace it was captured."""

    FAST = "fast"
    PACE = "pace"


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """Options of one capture. Raises `CaptureOptionError` on invalid values.

    `interface` is a comma list as in the reference; each NIC gets its own handle and `promisc` applies
    to each (``any`` cannot be promiscuous; libpcap ignores the flag there).
    """

    interface: str = "any"
    promisc: bool = True
    filter: str = ""
    snaplen: int = 3200
    ringbuffer_mb: int = 50
    immediate: bool = True
    timeout_ms: int = 100
    sipport: frozenset[int] = field(default_factory=lambda: frozenset({5060}))
    replay: Replay = Replay.FAST

    def __post_init__(self) -> None:
        parse_interfaces(self.interface)
        if not isinstance(self.snaplen, int) or not 64 <= self.snaplen <= 262144:
            raise CaptureOptionError(f"snaplen must be 64..262144, got {self.snaplen!r}")
        if not isinstance(self.ringbuffer_mb, int) or not 1 <= self.ringbuffer_mb <= 2000:
            raise CaptureOptionError(f"ringbuffer must be 1..2000 MB, got {self.ringbuffer_mb!r}")
        if not isinstance(self.timeout_ms, int) or not 0 <= self.timeout_ms <= 60000:
            raise CaptureOptionError(f"timeout_ms must be 0..60000, got {self.timeout_ms!r}")
        if "\x00" in self.filter:
            raise CaptureOptionError("filter contains a NUL byte")
        if not isinstance(self.replay, Replay):
            raise CaptureOptionError(f"replay must be a Replay, got {self.replay!r}")
        if not self.sipport or any(not 1 <= p <= 65535 for p in self.sipport):
            raise CaptureOptionError("sipport must hold ports 1..65535")

    @property
    def interfaces(self) -> tuple[str, ...]:
        """The devices named by `interface`."""
        return parse_interfaces(self.interface)
