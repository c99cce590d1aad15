"""Per-stage counters of the packet engine.

One flat mapping with dotted names keeps the hot path cheap (a dict update only on rare events) and lets
callers group by stage prefix:

* ``frames``/``records``: frames handed in, records handed out.
* ``error.<kind>``: malformed or truncated input, by layer.
* ``tunnel.<name>``: packets taken out of a tunnel.
* ``unknown_tunnel.<kind>``: tunnel headers we recognise but whose payload we do not decode.
* ``skip.<kind>``: well-formed packets that carry nothing for call analysis (ARP, ICMP, control messages ...).
* ``frag.<event>``: fragment reassembly (``in``, ``reassembled``, ``timeout``, ``evicted``, ``oversize`` ...).
* ``dedup.<event>``: duplicate suppression.
* ``truncated``: IP packets shorter than their header says (snaplen), decoded as far as captured.
"""

from __future__ import annotations


class DecodeStats:
    """Counters of one decoder. Cheap to update; `as_dict()` gives a snapshot."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def inc(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        counts = self.counts
        counts[name] = counts.get(name, 0) + n

    def get(self, name: str) -> int:
        """Return the value of one counter (0 when never incremented)."""
        return self.counts.get(name, 0)

    def prefix(self, prefix: str) -> dict[str, int]:
        """Return the counters of one stage, e.g. ``prefix("error")`` -> ``{"ipv4_header": 3}``."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.counts.items() if k.startswith(p)}

    def total(self, prefix: str) -> int:
        """Return the sum of one stage's counters."""
        return sum(self.prefix(prefix).values())

    def as_dict(self) -> dict[str, int]:
        """Return a copy of all counters."""
        return dict(self.counts)

    def __repr__(self) -> str:
        return f"DecodeStats({self.counts!r})"
