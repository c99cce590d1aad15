"""What a sensor-mode case gets: options, time scaling, and `session()`, which starts a scripted suite central and
the sensor under test pointed at it, and stops both when the case ends."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from .central import Central, Conn, Script, rsa_key
from .model import CaseFailed, skip
from .sensorproc import SensorProcess, expand_command, make_pcap, write_config
from .specdata import Spec

__all__ = ["SensorContext", "SensorOptions", "SensorSession"]

T = TypeVar("T")
FAILOVER_HOSTS = ("127.0.0.2", "127.0.0.3")


@dataclass(slots=True)
class SensorOptions:
    """Command-line options of the sensor mode."""

    command: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: every case gets its own free port (cases may then run in parallel)
    time_scale: float = 1.0
    max_wait: float = 20.0
    password: str = "conformance-secret"
    id_sensor: int = 7
    startup: float = 20.0  # how long a sensor may take to open its first connection (never scaled)
    workdir: Path | None = None
    keep_workdirs: bool = False
    extra_config: dict[str, str] = field(default_factory=dict)
    stop_grace: float = 1.0  # SIGTERM, then SIGKILL after this long (the case is over)


class SensorSession:
    """One case's run: the suite central (`central`, scripted by `script`) and the started sensor (`proc`)."""

    def __init__(self, ctx: SensorContext, central: Central, proc: SensorProcess, workdir: Path,
                 config: dict[str, object], port: int) -> None:
        self.ctx = ctx
        self.port = port
        self.central = central
        self.script = central.script
        self.proc = proc
        self.workdir = workdir
        self.config = config

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll `predicate` until it returns something truthy; return it. Raises CaseFailed when `timeout`
        seconds pass or the sensor exits first (with the tail of its output)."""
        deadline = trio.current_time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            rc = self.proc.returncode
            if rc is not None:
                raise CaseFailed(f"the sensor exited with status {rc} while the suite waited for {what}; "
                                 f"its output ends with:\n{self.proc.tail()}")
            if trio.current_time() >= deadline:
                raise CaseFailed(f"{what}: not within {timeout:.1f} s")
            await trio.sleep(0.02)

    async def conn(self, kind: str, n: int = 1, *, accepted: bool = False, timeout: float | None = None) -> Conn:
        """The n-th connection of `kind` (1-based), waiting for it (the first one gets the start-up allowance)."""
        wait = timeout if timeout is not None else self.ctx.options.startup + self.ctx.wait(5)

        def found() -> Conn | None:
            conns = [c for c in self.central.of(kind) if c.accepted or not accepted]
            return conns[n - 1] if len(conns) >= n else None

        return await self.wait_until(found, wait, f"connection #{n} of type {kind!r}"
                                     + (" (accepted)" if accepted else ""))

    @property
    def busy_allowance(self) -> float:
        """How long to wait for work the sensor does at its own pace (credentials, the first CDR, a task's
        output): the start-up allowance, since a loaded machine slows it down as much as a start."""
        return self.ctx.options.startup + self.ctx.wait(5)

    async def creds(self, conn: Conn) -> bytes:
        """The credentials plaintext of `conn`, waiting for it."""
        return await self.wait_until(lambda: conn.creds_text, self.busy_allowance, "the credentials block")

    def check_clean(self) -> None:
        """Fail when the sensor broke a writer rule on any connection of this run."""
        if self.central.violations:
            raise CaseFailed("; ".join(self.central.violations[:3]))

    def spool_file(self, relpath: str, data: bytes) -> Path:
        """Create a file under the sensor's spool directory (for getfile / file_exists tasks)."""
        path = self.workdir / "spool" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class SensorContext:
    """Per-run state shared by the sensor-mode cases."""

    options: SensorOptions
    spec: Spec
    notes: list[str] = field(default_factory=list)
    _base: Path | None = None
    _lock: Any = None

    # time -----------------------------------------------------------------------------------------------------
    def t(self, seconds: float) -> float:
        """A protocol duration as the sensor runs it (scaled by --time-scale)."""
        return seconds * self.options.time_scale

    def wait(self, seconds: float) -> float:
        """How long to wait for something the spec says happens within `seconds` (scaled, plus slack)."""
        return self.t(seconds) + 1.0 + 0.2 * self.t(seconds)

    def need_wait(self, seconds: float) -> None:
        """Skip the case when a spec duration, scaled, is longer than --max-wait allows."""
        if self.t(seconds) > self.options.max_wait:
            skip(f"needs a {self.t(seconds):.0f} s wait (spec {seconds:.0f} s x time scale "
                 f"{self.options.time_scale}); raise --max-wait")

    # sessions -------------------------------------------------------------------------------------------------
    def base_dir(self) -> Path:
        """The run directory (case work directories and generated captures)."""
        if self._base is None:
            if self.options.workdir is not None:
                self.options.workdir.mkdir(parents=True, exist_ok=True)
                self._base = Path(tempfile.mkdtemp(prefix="run-", dir=self.options.workdir))
            else:
                self._base = Path(tempfile.mkdtemp(prefix="vmproto-conformance-"))
        return self._base

    def cleanup(self) -> None:
        """Remove the run directory unless --keep-workdirs."""
        if self._base is not None and not self.options.keep_workdirs:
            shutil.rmtree(self._base, ignore_errors=True)

    @asynccontextmanager
    async def session(self, *, config: dict[str, object] | None = None, pcap: str = "calls",
                      hosts: tuple[str, ...] | None = None, up: tuple[str, ...] | None = None,
                      **script: Any) -> AsyncIterator[SensorSession]:
        """Start a suite central and the sensor; yield the SensorSession; stop both at the end.

        `config` adds or overrides sensor options. `script` sets fields of the central's Script. `hosts` lists the
        addresses written into `server_destination` (default: the --listen host); the central listens on those in
        `up` (default: all of them), all on one port. Raises CaseFailed when the central cannot listen or the
        sensor cannot be started.
        """
        opts = self.options
        base = self.base_dir()
        workdir = Path(tempfile.mkdtemp(prefix="case-", dir=base))
        capture = await trio.to_thread.run_sync(make_pcap, base, pcap)
        for bits in (2048, 4096):
            await rsa_key(bits)  # generated once per run, before any sensor timing starts
        central = Central(Script(**{"password": opts.password, **script}), scale=opts.time_scale)
        hosts = hosts or (opts.host,)
        up = hosts if up is None else up
        caught: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                port = opts.port
                if port == 0 and len(hosts) > 1:
                    port = _free_port(hosts[-1])
                for host in up:
                    port = await central.listen(nursery, host, port)
                if not up:
                    port = port or _free_port(hosts[0])
                conf: dict[str, object] = {
                    "server_destination": ",".join(hosts), "server_destination_port": port,
                    "server_password": opts.password, "id_sensor": opts.id_sensor, "name_sensor": "conformance",
                    "spooldir": workdir / "spool", "journal_dir": workdir / "journal",
                    "managerip": "127.0.0.1", "managerport": _free_port(), "cleanspool": False,
                }
                conf.update(opts.extra_config)
                conf.update(config or {})
                (workdir / "spool").mkdir()
                write_config(workdir / "sensor.conf", conf)
                argv = expand_command(opts.command, {
                    "host": ",".join(hosts), "port": str(port), "password": opts.password,
                    "id_sensor": str(opts.id_sensor), "workdir": str(workdir), "pcap": str(capture)})
                proc = SensorProcess(argv, workdir / "sensor.log")
                await proc.start()
                session = SensorSession(self, central, proc, workdir, conf, port)
                try:
                    yield session
                except BaseException as exc:  # noqa: BLE001 - re-raised below, outside the nursery's group
                    caught = exc
                finally:
                    with trio.CancelScope(shield=True):
                        await proc.stop(opts.stop_grace)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A handler of the central failed unexpectedly: report its first error plainly.
            raise group.exceptions[0] from None
        finally:
            if not opts.keep_workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
        if caught is not None:
            raise caught
