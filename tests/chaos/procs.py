"""Our central and our sensor as real processes (`python -m vmproto.server`, `python -m vmproto.sensor`), driven as
black boxes: start, wait for readiness in the log, kill -9, stop, peak RSS.

Every process runs in its own session, so a kill reaches exactly the process we started (by its pid), and
optionally inside a network namespace (`ip netns exec NS ...`, which execs: the pid is the Python process).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import trio

from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.testing.mariadb import MariaDBParams

__all__ = ["Proc", "Central", "Sensor", "ChaosError", "free_port", "write_conf", "peak_rss_mb", "Database",
           "log_lines_per_second"]

PY = sys.executable
PASSWORD = "chaos-password"
_TS = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


class ChaosError(Exception):
    """A scenario could not be run as designed (a process did not start, a wait timed out); the message says which
    and names the log to read."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_conf(path: Path, **options: object) -> Path:
    """A voipmonitor.conf-style file with `options` in [general]; returns `path`."""
    path.write_text("[general]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of the resident set (VmHWM) of `pid` in MiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Proc:
    """One child process with its log file; remembers the highest VmHWM seen (`peak_mb`) across restarts
    (sample it with `sample()`, e.g. from `watch_rss`)."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_mb = 0.0
        self.incarnation = 0

    def _spawn(self, cmd: list[str], netns: str | None) -> None:
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.incarnation += 1
        with self.log.open("ab") as fh:
            fh.write(f"--- chaos: start #{self.incarnation}: {' '.join(cmd)}\n".encode())
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ChaosError(f"{self.name} was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> None:
        if self.alive():
            mb = peak_rss_mb(self.pid)
            if mb is not None:
                self.peak_mb = max(self.peak_mb, mb)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL the process we started (sampling its RSS first) and reap it."""
        if self.alive():
            self.sample()
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to `timeout` s (then SIGKILL); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(timeout):
                while self.proc.poll() is None:
                    await trio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end on its own; returns its status. Raises ChaosError after `timeout` s."""
        assert self.proc is not None
        with trio.move_on_after(timeout):
            while self.proc.poll() is None:
                self.sample()
                await trio.sleep(0.1)
            return self.proc.returncode
        raise ChaosError(f"{self.name} still running after {timeout:.0f} s; see {self.log}")

    async def wait_log(self, needle: str, timeout: float, *, after: int = 0) -> None:
        """Wait until `needle` appears in the log past byte offset `after`. Raises ChaosError on timeout or exit."""
        with trio.move_on_after(timeout):
            while True:
                if needle in self.log_text()[after:]:
                    return
                if not self.alive():
                    raise ChaosError(f"{self.name} exited ({self.proc.returncode if self.proc else '-'}) before "
                                     f"logging {needle!r}; see {self.log}")
                await trio.sleep(0.1)
        raise ChaosError(f"{self.name}: no {needle!r} within {timeout:.0f} s; see {self.log}")


class Central(Proc):
    """`python -m vmproto.server` on a fixed port (kept across restarts) against an external MariaDB."""

    def __init__(self, workdir: Path, db: MariaDBParams, database: str, *, port: int | None = None,
                 bind: str = "127.0.0.1", netns: str | None = None, **options: object) -> None:
        super().__init__("central", workdir / "central.log")
        self.bind = bind
        self.port = port or free_port()
        self.netns = netns
        self.database = database
        opts: dict[str, object] = dict(server_bind=bind, server_bind_port=self.port, server_password=PASSWORD,
                                       mysqlsocket=db.unix_socket, mysqlusername=db.user, mysqldb=database,
                                       datadir=workdir / "central", server_rsa_key_pool=2)
        opts.update(options)
        self.conf = write_conf(workdir / "central.conf", **opts)

    async def start(self, timeout: float = 120.0) -> float:
        """Start and wait for `server started`; returns the seconds it took."""
        offset = len(self.log_text())
        t0 = time.monotonic()
        self._spawn([PY, "-m", "vmproto.server", "--config-file", str(self.conf)], self.netns)
        await self.wait_log("server started", timeout, after=offset)
        return time.monotonic() - t0


class Sensor(Proc):
    """`python -m vmproto.sensor -r PCAP --stay` in client mode (local processing, or mirroring)."""

    def __init__(self, workdir: Path, name: str, *, server: str, port: int, id_sensor: int, mirror: bool = False,
                 netns: str | None = None, **options: object) -> None:
        super().__init__(name, workdir / f"{name}.log")
        self.netns = netns
        # quick_save_cdr + cleanup_calls_period 1 with a paced replay (start()): each call closes at its BYE and its
        # CDR leaves at once, all along the capture, so a fault triggered part-way always meets CDRs in flight,
        # however fast the machine.
        opts: dict[str, object] = dict(id_sensor=id_sensor, server_destination=server, server_destination_port=port,
                                       server_password=PASSWORD, managerport=0, spooldir=workdir / f"{name}-spool",
                                       savesip="no", savertp="no", cleanup_calls_period=1, quick_save_cdr="quick")
        if mirror:
            opts["packetbuffer_sender"] = "yes"
        opts.update(options)
        self.conf = write_conf(workdir / f"{name}.conf", **opts)

    def start(self, pcap: Path, *, stay: bool = True, pace: bool = True) -> None:
        self._spawn([PY, "-m", "vmproto.sensor", "--config-file", str(self.conf), "-r", str(pcap),
                     *(["--stay"] if stay else []), *(["--pace"] if pace else [])], self.netns)


async def watch_rss(procs: Iterable[Proc], interval: float = 0.2) -> None:
    """Sample the peak RSS of `procs` until cancelled (VmHWM is a high-water mark: sampling only has to happen
    before the process ends)."""
    procs = list(procs)
    while True:
        for p in procs:
            p.sample()
        await trio.sleep(interval)


def log_lines_per_second(text: str, since: str = "") -> dict[str, int]:
    """Count log lines per wall-clock second (`YYYY-MM-DDTHH:MM:SS` prefix) at or after `since`."""
    counts: dict[str, int] = {}
    for line in text.encode(errors="replace").splitlines():
        m = _TS.match(line)
        if m:
            key = m.group(1).decode()
            if key >= since:
                counts[key] = counts.get(key, 0) + 1
    return counts


class Database:
    """Read-only look at the central's database: which CDRs landed, how many times."""

    def __init__(self, db: MariaDBParams, database: str) -> None:
        self.params = ConnectParams(database=database, user=db.user, unix_socket=db.unix_socket)

    async def cdr_names(self) -> dict[str, int]:
        """fbasename → number of cdr rows carrying it (a CDR stored twice counts 2). Empty while the schema or the
        database is missing or the database is down."""
        try:
            conn = await Connection.open(self.params)
        except Exception:  # noqa: BLE001 - database down or not created yet: nothing landed that we can see
            return {}
        try:
            rows = (await conn.execute("SELECT n.fbasename, COUNT(*) FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID "
                                       "GROUP BY n.fbasename")).rows
        except Exception:  # noqa: BLE001 - tables not created yet
            return {}
        finally:
            await conn.aclose()
        return {name.decode(): int(count) for name, count in rows}

    async def cdr_count(self) -> int:
        return sum((await self.cdr_names()).values())

    async def wait_count(self, at_least: int, timeout: float, *, stable_s: float = 0.0) -> tuple[int, float]:
        """Poll until at least `at_least` CDR rows exist (then `stable_s` more seconds of no change, to catch
        late duplicates). Returns (rows, seconds waited until `at_least`); on timeout the rows seen so far and
        the full timeout."""
        t0 = time.monotonic()
        n = await self.cdr_count()
        with trio.move_on_after(timeout):
            while n < at_least:
                await trio.sleep(0.2)
                n = await self.cdr_count()
        reached = time.monotonic() - t0
        if stable_s and n >= at_least:
            await trio.sleep(stable_s)
            n = await self.cdr_count()
        return n, reached
