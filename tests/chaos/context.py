"""Sizes of the two modes and what a scenario gets to run with.

Short mode (CI, the default): ~100 hostile connections, ~5 s outages, a few hundred calls. Full mode
(`VMPROTO_CHAOS_FULL=1` or `python -m tests.chaos --full`): 1,000 hostile connections, 60 s outages, thousands of
calls — the figures in docs/reliability.md come from it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from vmproto.testing.mariadb import MariaDBParams, MariaDBServer

__all__ = ["Size", "ChaosContext", "SHORT", "FULL", "size_from_env"]


@dataclass(frozen=True)
class Size:
    name: str
    calls: int  # calls in the fault workloads
    outage_s: float  # how long MariaDB stays down / the network stays cut
    hostile: int  # hostile connections per kind
    flood_s: float  # how long the hostile phase lasts
    password_rate: int  # wrong-password handshakes per second (attempted)
    quiet_s: float  # after a fault, stop waiting for CDRs once nothing new landed for this long


SHORT = Size("short", calls=250, outage_s=5.0, hostile=100, flood_s=6.0, password_rate=20, quiet_s=8.0)
FULL = Size("full", calls=3000, outage_s=60.0, hostile=1000, flood_s=75.0, password_rate=100, quiet_s=75.0)


def size_from_env() -> Size:
    """FULL when VMPROTO_CHAOS_FULL is set to anything but ''/0/no, else SHORT."""
    return FULL if os.environ.get("VMPROTO_CHAOS_FULL", "").lower() not in ("", "0", "no", "false") else SHORT


@dataclass
class ChaosContext:
    """A private MariaDB the scenarios may stop and start (`mariadb`), its parameters, a work directory."""

    mariadb: MariaDBServer
    db: MariaDBParams
    workdir: Path
    size: Size

    def scenario_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def database_name(name: str) -> str:
        return f"chaos_{name.replace('-', '_')[:20]}_{uuid.uuid4().hex[:6]}"
