"""What every chaos scenario reports: lost, duplicated, late, recovery time, peak RSS (printed, never timed-asserted).

Definitions (spec §8.9-§8.10):
- `expected`: CDRs our analyzer makes offline from the same capture (workload.analyse_offline);
- `lost`: expected CDRs absent from the central's database at the end;
- `duplicated`: extra rows for a CDR already stored (a CDR stored twice counts 1);
- `late`: CDRs committed only after the fault ended (they waited in the sensor's journal / mirror buffer);
- `recovery_s`: from the end of the fault until the first CDR committed after it (the flow resumed);
- `drain_s`: from the end of the fault until every expected CDR was stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figures", "count_cdrs"]


@dataclass
class Figures:
    scenario: str
    expected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    recovery_s: float | None = None
    drain_s: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One human-readable line, the shape docs/reliability.md's table is built from."""
        rss = " ".join(f"{k}={v:.0f}MiB" for k, v in sorted(self.peak_rss_mb.items()))
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        drain = "-" if self.drain_s is None else f"{self.drain_s:.1f}s"
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (f"[chaos] {self.scenario}: expected={self.expected} stored={self.stored} lost={self.lost} "
                f"duplicated={self.duplicated} late={self.late} recovery={rec} drain={drain} peak_rss: {rss}"
                + (f" | {extra}" if extra else ""))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def count_cdrs(fig: Figures, expected: frozenset[str], stored: dict[str, int], *, before_fault_end: int = 0) -> None:
    """Fill expected/stored/lost/duplicated/late of `fig` from the offline set and the database's
    fbasename → rows map; `before_fault_end` is the row count seen when the fault ended."""
    fig.expected = len(expected)
    fig.stored = sum(stored.values())
    fig.lost = len(expected - stored.keys())
    fig.duplicated = sum(n - 1 for n in stored.values() if n > 1)
    unexpected = stored.keys() - expected
    if unexpected:
        fig.extra["unexpected"] = len(unexpected)
    fig.late = max(0, fig.stored - fig.duplicated - before_fault_end)
