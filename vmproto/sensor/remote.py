"""The sensor's client/server mode: what `server_destination` turns on (spec §6-§14).

One `RemoteClient` per sensor process, built from the configuration:

* the service connection (always): credentials, auto parameters, ping/pong, and GUI tasks run through the
  manager commands over the local spool, answered on `response` / `responses` connections;
* local processing (`packetbuffer_sender = no`, the default): a `StoreCdrSink` — every CDR's SQL goes through
  the durable journal to the central's `store` channel and leaves the journal only on `OK` (spec §8.10);
* packet mirroring (`packetbuffer_sender = yes`): a `MirrorSender` gets the raw capture batches before any
  analysis and ships them in pcap_block_store containers (spec §9).

Start-up does not wait for the central: CDRs and packets queue (journal, bounded buffer) until the service
handshake succeeds, so a sensor replaying a file or capturing live loses nothing while the central is down.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

from vmproto.config import ConfigError
from vmproto.logs import log_event
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.sensor.client.cdrsink import StoreCdrSink
from vmproto.sensor.client.connector import Connector, parse_destinations
from vmproto.sensor.client.errors import ClientError
from vmproto.sensor.client.journal import Journal
from vmproto.sensor.client.mirror import MirrorOptions, MirrorSender
from vmproto.sensor.client.query import load_sensor_config
from vmproto.sensor.client.responses import ResponsesSender
from vmproto.sensor.client.service import ServiceClient
from vmproto.sensor.client.session import SensorIdentity, SessionState
from vmproto.sensor.client.store import StoreClient
from vmproto.sensor.client.tasks import TaskOutput, TaskRunner
from vmproto.sensor.client.timings import Timings
from vmproto.sensor.manager.commands import CommandContext, execute
from vmproto.wire.compression import PbCompression

__all__ = ["RemoteClient", "RemoteSetupError", "apply_sensor_config", "client_mode", "fetch_sensor_config"]

log = logging.getLogger("vmproto.sensor.remote")

DEFAULT_JOURNAL_DIR = "journal"  # under the spool directory, when journal_dir is not set


class RemoteSetupError(Exception):
    """The C/S options cannot be used (the message names the option)."""


def client_mode(cfg: Any) -> bool:
    """True when the sensor talks to a central (`server_destination` set)."""
    return bool(str(cfg.get("server_destination", "") or "").strip())


def _mirror_options(cfg: Any, ifname: str) -> MirrorOptions:
    compress = cfg.get("packetbuffer_compress", None)
    method = PbCompression(int(cfg.get("packetbuffer_compress_method", 1)))
    buffer_mb = int(cfg.get("max_buffer_mem", 0) or 0)
    kwargs: dict[str, Any] = {}
    if buffer_mb > 0:
        kwargs["buffer_max_bytes"] = max(buffer_mb, 10) * 1024 * 1024  # the reference's floor: 10 MB
    return MirrorOptions(
        ifname=ifname,
        # packetbuffer_compress = auto (None) means yes for a packetbuffer sender (facts §7).
        compress=None if compress is False else method,
        checksum=bool(cfg.get("mirror_use_checksum", True)),
        require_confirmation=bool(cfg.get("mirror_require_confirmation", True)),
        block_maxsize=int(cfg.get("packetbuffer_block_maxsize", 1024)) * 1024,
        block_maxtime=int(cfg.get("packetbuffer_block_maxtime", 100)) / 1000.0,
        spool_dir=str(cfg.get("packetbuffer_file_path", "") or ""),
        spool_max_bytes=int(cfg.get("packetbuffer_file_totalmaxsize", 0) or 0) * 1024 * 1024,
        **kwargs,
    )


# Options a sensor needs to reach its central: a configuration row in the central's database cannot change them.
_LOCAL_ONLY = frozenset({"server_destination", "server_destination_port", "server_password", "id_sensor",
                         "mysqlloadconfig"})


async def fetch_sensor_config(cfg: Any, timeout: float = 20.0) -> dict[str, str]:
    """The sensor's `sensor_config` row, read through the central's `query` channel at start-up, as a reference
    sensor does with `mysqlloadconfig = yes` (its first connection, gzip before the service handshake). Returns
    option → value ({} when there is no row, or when the central cannot be reached within `timeout`: the sensor
    then runs on its file configuration and says so)."""
    try:
        connector = Connector(parse_destinations(str(cfg.get("server_destination", ""))),
                              int(cfg.get("server_destination_port", 60024)),
                              Timings(connect_timeout=float(cfg.get("connect_timeout", 10))))
    except (ClientError, ValueError) as exc:
        raise RemoteSetupError(f"server_destination: {exc}") from None
    session = SessionState(identity=SensorIdentity(id_sensor=int(cfg.get("id_sensor", -1)),
                                                   password=str(cfg.get("server_password", ""))))
    with trio.move_on_after(timeout):
        try:
            return await load_sensor_config(connector, session)
        except ClientError as exc:
            log_event(log, logging.WARNING, "sensor_config not read from the central; using the file",
                      error=str(exc))
            return {}
    log_event(log, logging.WARNING, "sensor_config not read from the central in time; using the file",
              seconds=timeout)
    return {}


def apply_sensor_config(cfg: Any, options: dict[str, str]) -> list[str]:
    """Override `cfg` with the database row (registered options only, never those in _LOCAL_ONLY). Returns the
    names applied; values that do not parse are logged and skipped."""
    applied = []
    for name, value in options.items():
        if name in _LOCAL_ONLY:
            continue
        try:
            cfg.set(name, value)
        except KeyError:
            continue  # a column that is not a sensor option (or not one vmproto knows)
        except ConfigError as exc:
            log_event(log, logging.WARNING, "sensor_config value ignored", option=name, error=str(exc))
            continue
        applied.append(name)
    if applied:
        log_event(log, logging.INFO, "sensor_config applied", options=",".join(sorted(applied)))
    return applied


class _ManagerCommands:
    """Adapts the manager commands (`execute(line, out, ctx)`) to the task runner's `runner(command, out)`."""

    def __init__(self, ctx: CommandContext) -> None:
        self.ctx = ctx

    async def __call__(self, command: str, out: TaskOutput) -> None:
        await execute(command, out, self.ctx)


class RemoteClient:
    """Everything a client-mode sensor runs against its central. Raises RemoteSetupError on bad options."""

    def __init__(self, cfg: Any, *, manager_ctx: CommandContext, spooldir: Path, replaying: bool) -> None:
        self.cfg = cfg
        try:
            destinations = parse_destinations(str(cfg.get("server_destination", "")))
            # client_server_receiver_timeout: how long the service waits for the central (0 = the default 30 s).
            receive_timeout = float(cfg.get("client_server_receiver_timeout", 0) or 30)
            timings = Timings(connect_timeout=float(cfg.get("connect_timeout", 10)),
                              service_stop_grace=float(cfg.get("service_stop_grace", 7)),
                              service_receive_timeout=receive_timeout)
            self.connector = Connector(destinations, int(cfg.get("server_destination_port", 60024)), timings)
        except (ClientError, ValueError, TypeError) as exc:
            raise RemoteSetupError(f"server_destination: {exc}") from None
        self.packetbuffer_sender = bool(cfg.get("packetbuffer_sender", False))
        identity = SensorIdentity(id_sensor=int(cfg.get("id_sensor", -1)), name=str(cfg.get("name_sensor", "")),
                                  password=str(cfg.get("server_password", "")),
                                  packetbuffer_sender=self.packetbuffer_sender)
        self.session = SessionState(identity=identity)
        manager_ctx.mirror_sender = self.packetbuffer_sender
        self.responses = ResponsesSender(self.connector, self.session)
        self.tasks = TaskRunner(self.connector, self.session, runner=_ManagerCommands(manager_ctx),
                                responses=self.responses)
        self.service = ServiceClient(self.connector, self.session, self.tasks)
        self._service_done = trio.Event()
        self.mirror: MirrorSender | None = None
        self.store_sink: StoreCdrSink | None = None
        if self.packetbuffer_sender:
            interfaces = cfg.get("interface", ()) or ()
            ifname = "read_from" if replaying or not interfaces else str(interfaces[0])[:9]
            try:
                self.mirror = MirrorSender(self.connector, self.session, _mirror_options(cfg, ifname))
            except ClientError as exc:
                raise RemoteSetupError(str(exc)) from None
        else:
            journal_dir = Path(str(cfg.get("journal_dir", "") or spooldir / DEFAULT_JOURNAL_DIR))
            journal = Journal(journal_dir, max_live_bytes=int(cfg.get("store_journal_max", 1024)) * 1024 * 1024)
            self.store_sink = StoreCdrSink(StoreClient(self.connector, self.session, journal))

    @property
    def sinks(self) -> list[StoreCdrSink]:
        """The CDR sinks this mode adds to the sensor (none when mirroring: the central analyses)."""
        return [self.store_sink] if self.store_sink is not None else []

    def add_batch(self, batch: PacketBatch) -> None:
        """Mirroring: hand a raw capture batch to the sender (no-op in local-processing mode)."""
        if self.mirror is not None:
            self.mirror.add_batch(batch)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the service (and responses, mirroring) until cancelled; started at once, not after the first
        handshake, so capture never waits for the central."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._service)
            nursery.start_soon(self.responses.run)
            if self.mirror is not None:
                nursery.start_soon(self.mirror.run)
            task_status.started()

    async def _service(self) -> None:
        try:
            await self.service.run()
        finally:
            self._service_done.set()

    async def stop(self) -> None:
        """Shut the service down the protocol's way (spec §7.9: answer the next ping with `stop`, or close after
        the grace period) and wait for it, at most the grace period plus a second."""
        self.service.stop()
        with trio.move_on_after(self.connector.timings.service_stop_grace + 1.0):
            await self._service_done.wait()

    async def drain(self, stall_timeout: float) -> list[str]:
        """At the end of a run: wait for mirrored blocks to be confirmed (the service keeps running).
        Returns the problems (empty when everything was delivered)."""
        problems: list[str] = []
        if self.mirror is not None:
            self.mirror.flush()  # the block being built goes out now, not at block_maxtime
            last = -1
            while True:
                with trio.move_on_after(stall_timeout) as scope:
                    await self.mirror.wait_sent()
                if not scope.cancelled_caught:
                    break
                sent = self.mirror.stats.blocks_sent
                if sent == last:
                    problems.append(f"mirroring: {self.mirror.queued_blocks} blocks not confirmed by the central")
                    break
                last = sent
            dropped = sum(self.mirror.stats.dropped.values())
            if dropped:
                problems.append(f"mirroring dropped {dropped} packets: {dict(self.mirror.stats.dropped)}")
        log_event(log, logging.INFO, "client drained", handshakes=self.service.handshakes,
                  blocks_confirmed=self.mirror.stats.blocks_confirmed if self.mirror else 0)
        return problems
