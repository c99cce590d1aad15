"""Fault scenarios: our sensor (local processing or mirroring) replays a generated capture to our central while
something breaks; afterwards the CDRs in the central's database are compared with the offline analysis.

Each scenario returns `Figures` (lost, duplicated, late, recovery, peak RSS); the tests assert only on counts.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.chaos.context import ChaosContext
from tests.chaos.figures import Figures, count_cdrs
from tests.chaos.netns import NetnsPair
from tests.chaos.procs import Central, ChaosError, Database, Sensor, watch_rss
from tests.chaos.workload import Workload, make_workload

__all__ = ["central_kill_during_store", "central_kill_during_mirroring", "mariadb_outage", "network_cut",
           "disk_full", "MountUnavailable", "FAULT_SCENARIOS"]

TRIGGER_FRACTION = 0.3  # the fault starts once this share of the expected CDRs is stored
DRAIN_TIMEOUT = 240.0  # after the fault: how long everything may take to arrive (back-offs up to 60 s)


class MountUnavailable(Exception):
    """A small file system for the disk-full scenario cannot be mounted here (the message says why)."""


@dataclass
class Run:
    """One scenario run: the processes, the database view, and the marks the fault sets."""

    ctx: ChaosContext
    fig: Figures
    workload: Workload
    central: Central
    sensor: Sensor
    db: Database
    fault_started: float = 0.0
    sensor_started: bool = False
    notes: dict[str, object] = field(default_factory=dict)


Fault = Callable[[Run], Awaitable[None]]


async def _run(ctx: ChaosContext, name: str, fault: Fault, *, mirror: bool = False, seed: int = 1,
               central_kw: dict | None = None, sensor_kw: dict | None = None, server: str = "127.0.0.1",
               workload: Workload | None = None, trigger: float = TRIGGER_FRACTION) -> Figures:
    """Start central and sensor, wait for `trigger` (share) of the CDRs, apply `fault` (it returns when the fault
    has ended), then wait for the rest and count. `trigger` 0: the fault starts before the sensor, and starts it
    (`run.sensor.start(run.workload.pcap)`). Raises ChaosError when a process does not start."""
    wd = ctx.scenario_dir(name)
    wl = workload or make_workload(wd, ctx.size.calls, seed=seed)
    central = Central(wd, ctx.db, ctx.database_name(name), **(central_kw or {}))
    fig = Figures(name)
    db = Database(ctx.db, central.database)
    sensor = Sensor(wd, "sensor", server=server, port=central.port, id_sensor=2, mirror=mirror, **(sensor_kw or {}))
    run = Run(ctx, fig, wl, central, sensor, db)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss, [central, sensor])
            await central.start()
            at_fault = 0
            if trigger > 0:
                sensor.start(wl.pcap)
                at_fault, _ = await db.wait_count(max(1, int(len(wl.expected) * trigger)), 120)
            fig.extra["at_fault"] = at_fault
            run.fault_started = time.monotonic()
            await fault(run)
            fault_end = time.monotonic()
            fig.extra["fault_s"] = round(fault_end - run.fault_started, 1)
            before = await db.cdr_count()
            # Recovery: the first commit after the fault; drain: everything expected is there.
            with trio.move_on_after(DRAIN_TIMEOUT):
                n = before
                last_change = fault_end
                while n < len(wl.expected) and time.monotonic() - last_change < ctx.size.quiet_s:
                    await trio.sleep(0.1)
                    m = await db.cdr_count()
                    if m != n:
                        last_change = time.monotonic()
                        if fig.recovery_s is None and m > before:
                            fig.recovery_s = round(last_change - fault_end, 1)
                    n = m
                if n >= len(wl.expected):
                    fig.drain_s = round(time.monotonic() - fault_end, 1)
            await trio.sleep(1.0)  # late duplicates would land now
            count_cdrs(fig, wl.expected, await db.cdr_names(), before_fault_end=before)
            fig.extra.update(run.notes)
            await sensor.stop()
            _sensor_report(fig, sensor.log_text(), mirror)
            await central.stop()
            nursery.cancel_scope.cancel()
    finally:
        sensor.kill9()
        central.kill9()
    fig.peak_rss_mb = {"central": round(central.peak_mb, 1), "sensor": round(sensor.peak_mb, 1)}
    return fig


_DROPPED = re.compile(r"mirroring dropped (\d+) packets: (\{[^}]*\})")
_FIELD = re.compile(r"\b(blocks_confirmed|cdrs_committed|cdrs|packets)=(\d+)")


def _sensor_report(fig: Figures, log: str, mirror: bool) -> None:
    """Copy the sensor's own end-of-run counters (mirroring drops by reason, packets) into `fig.extra`."""
    for line in log.splitlines():
        if "sensor stopped" in line or "client drained" in line:
            for key, value in _FIELD.findall(line):
                fig.extra[f"sensor_{key}"] = int(value)
    found = _DROPPED.findall(log)
    m = _DROPPED.search(log, log.rfind("mirroring dropped")) if found else None
    if mirror:
        fig.extra["mirror_dropped"] = int(m.group(1)) if m else 0
        if m:
            fig.extra["mirror_dropped_by_reason"] = m.group(2).replace(" ", "")
    fig.extra["sensor_restarts_logged"] = log.count("--- chaos: start #") - 1


# --------------------------------------------------------------------------------------------------- scenarios
async def _kill_and_restart(run: Run) -> None:
    run.central.kill9()
    await trio.sleep(1.0)  # a moment with nobody listening: connects are refused, the journal holds
    run.notes["central_restart_s"] = round(await run.central.start(), 1)


async def central_kill_during_store(ctx: ChaosContext) -> Figures:
    """kill -9 the central while a local-processing sensor stores CDRs, restart it at once."""
    return await _run(ctx, "central-kill-store", _kill_and_restart, seed=11)


async def central_kill_during_mirroring(ctx: ChaosContext) -> Figures:
    """kill -9 the central while a mirroring sensor ships packets (the central analyses them), restart it."""
    return await _run(ctx, "central-kill-mirror", _kill_and_restart, mirror=True, seed=12)


async def mariadb_outage(ctx: ChaosContext) -> Figures:
    """Stop the central's MariaDB for `size.outage_s` seconds during the store flow, then start it again."""

    async def outage(run: Run) -> None:
        await trio.to_thread.run_sync(run.ctx.mariadb.stop)
        await trio.sleep(run.ctx.size.outage_s)
        await trio.to_thread.run_sync(run.ctx.mariadb.start)
        run.notes["central_alive_after"] = int(run.central.alive())

    return await _run(ctx, "mariadb-outage", outage, seed=13)


async def network_cut(ctx: ChaosContext, net: NetnsPair) -> Figures:
    """Cut the sensor's route to the central (namespaces `net`) for `size.outage_s` seconds, then restore it."""

    async def cut(run: Run) -> None:
        net.cut()
        try:
            await trio.sleep(run.ctx.size.outage_s)
        finally:
            net.restore()

    return await _run(ctx, "network-cut", cut, seed=14, server=net.central_ip,
                      central_kw={"bind": net.central_ip, "netns": net.central_ns},
                      sensor_kw={"netns": net.sensor_ns})


@contextlib.contextmanager
def small_mount(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` for the duration. Raises MountUnavailable when mount is refused."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise MountUnavailable("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise MountUnavailable(f"mount -t tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(directory: Path) -> int:
    """Write a filler file until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(directory / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                written += fh.write(chunk)
        except OSError:
            pass
        try:  # the last partial chunk
            while True:
                written += fh.write(b"\0" * 512)
        except OSError:
            pass
    return written


async def disk_full(ctx: ChaosContext) -> Figures:
    """The sensor's journal and spool live on a small tmpfs, filled to the last byte before the sensor starts; the
    sensor runs on the full disk for `size.outage_s` seconds, then the filler is deleted."""
    wd = ctx.scenario_dir("disk-full")
    with small_mount(wd / "small") as mnt:

        async def fill(run: Run) -> None:
            run.notes["filled_bytes"] = await trio.to_thread.run_sync(_fill, mnt)
            run.sensor.start(run.workload.pcap)
            await trio.sleep(run.ctx.size.outage_s)
            run.notes["stored_while_full"] = await run.db.cdr_count()
            run.notes["sensor_alive_at_end_of_fault"] = int(run.sensor.alive())
            (mnt / "filler").unlink()

        return await _run(ctx, "disk-full", fill, seed=15, trigger=0.0,
                          sensor_kw={"journal_dir": mnt / "journal", "spooldir": mnt / "spool", "savesip": "yes"})


FAULT_SCENARIOS: dict[str, Callable[..., Awaitable[Figures]]] = {
    "central-kill-store": central_kill_during_store,
    "central-kill-mirror": central_kill_during_mirroring,
    "mariadb-outage": mariadb_outage,
    "network-cut": network_cut,
    "disk-full": disk_full,
}


def check_started(fig: Figures) -> None:
    """Raise ChaosError when the fault hit after everything was already stored (the run proved nothing)."""
    if fig.extra.get("at_fault", 0) >= fig.expected > 0:
        raise ChaosError(f"{fig.scenario}: the fault started after all CDRs were stored; use a bigger workload")
