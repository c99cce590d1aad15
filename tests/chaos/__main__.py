"""`python -m tests.chaos [--full] [--out DIR] [--json FILE] [SCENARIO ...]`: run the chaos scenarios outside pytest
and print their figures (the numbers of docs/reliability.md come from `--full`).

Scenarios: central-kill-store, central-kill-mirror, mariadb-outage, network-cut, disk-full, clock-skew,
hostile-peers (all by
default). Exit status 0 when every scenario ran (whatever its figures), 1 when one could not run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import trio

from tests.chaos.context import FULL, SHORT, ChaosContext
from tests.chaos.faults import FAULT_SCENARIOS, MountUnavailable
from tests.chaos.hostile import hostile_peers
from tests.chaos.netns import NetnsPair, NetnsUnavailable
from tests.chaos.procs import ChaosError
from tests.chaos.skew import clock_skew
from vmproto.testing.mariadb import MariaDBConfig, MariaDBServer

ALL = [*FAULT_SCENARIOS, "clock-skew", "hostile-peers"]


async def _one(ctx: ChaosContext, name: str):  # type: ignore[no-untyped-def]
    if name == "hostile-peers":
        return await hostile_peers(ctx)
    if name == "clock-skew":
        return await clock_skew(ctx)
    if name == "network-cut":
        with NetnsPair.create() as net:
            return await FAULT_SCENARIOS[name](ctx, net)
    return await FAULT_SCENARIOS[name](ctx)


async def _main(ctx: ChaosContext, names: list[str], json_out: Path | None) -> int:
    status = 0
    for name in names:
        if ctx.mariadb.pid is None:
            ctx.mariadb.start()
        try:
            fig = await _one(ctx, name)
        except (ChaosError, NetnsUnavailable, MountUnavailable) as exc:
            print(f"[chaos] {name}: NOT RUN: {exc}", flush=True)
            status = 1
            continue
        print(fig.line(), flush=True)
        if json_out is not None:
            with json_out.open("a") as fh:
                fh.write(fig.to_json() + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="any of " + ", ".join(ALL))
    parser.add_argument("--full", action="store_true", help="full size (1,000 peers, 60 s outages)")
    parser.add_argument("--out", type=Path, help="work directory (kept); default: a temporary one, removed")
    parser.add_argument("--json", type=Path, help="append each scenario's figures as a JSON line")
    args = parser.parse_args(argv)
    names = args.scenarios or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    work = args.out or Path(tempfile.mkdtemp(prefix="vmproto-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    db = MariaDBServer(MariaDBConfig(work / "mariadb"))
    db.start()
    try:
        ctx = ChaosContext(db, db.params, work, FULL if args.full else SHORT)
        return trio.run(_main, ctx, names, args.json)
    finally:
        db.stop()
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
