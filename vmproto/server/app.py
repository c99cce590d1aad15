"""The central server: start-up (database, schema, options from the database, key pool, listener), the
connection nursery, and an orderly shutdown.

    server = Server(cfg)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.run)
        ...
        server.request_shutdown()

Task tree (structured concurrency, every task has a parent):

    Server.run
    ├── infrastructure nursery: embedded MariaDB supervisor, RSA key pool refill, partition maintenance
    │   └── store writers nursery: one StoreWriter per id_main
    └── connection nursery: the listener's accept loops and one task per connection (each with its own nursery)

Shutdown: stop accepting; store connections finish the message they are applying (commit + OK) and close, every
other connection is closed at once; after `shutdown_grace` seconds whatever is left is cancelled; then writers,
key pool, database pool and the embedded MariaDB stop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import trio

from vmproto.config import Config, ConfigError, option
from vmproto.keylog import KeyLog
from vmproto.logs import log_event
from vmproto.metrics import MetricsStartError, ServerCollector, server_status, start_endpoint
from vmproto.sensor.app import analyzer_config, decode_options
from vmproto.sensor.spool import SpoolCleaner, SpoolIndex, SpoolOptionError, SpoolOptions, SpoolWriter
from vmproto.server.db.connection import Connection, ConnectParams, Pool, quote_identifier
from vmproto.server.db.errors import ConnectionLostError, DatabaseError, PrivilegeError, SqlError
from vmproto.server.db.schema import ensure_partitions, ensure_schema
from vmproto.server.db.sensor_config import load_sensor_config
from vmproto.server.embedded import DEFAULT_DATADIR, EmbeddedDatabaseError, start_embedded
from vmproto.server.handlers.context import ServerContext, ServerStats, StoreWriters
from vmproto.server.handlers.dispatch import handle_connection
from vmproto.server.handlers.io import SHUTDOWN
from vmproto.server.keypool import KeyFactory, RsaKeyPool
from vmproto.server.listener import Listener
from vmproto.server.pbanalysis import CentralAnalysis, FanOut
from vmproto.server.pbspool import PacketSink, PcapSpool
from vmproto.server.registry import Registry
from vmproto.wire.crypto import ManagerAesKey
from vmproto.wire.errors import LocalProtocolError

__all__ = ["Server", "ServerStartError"]

log = logging.getLogger("vmproto.server")

DB_START_TIMEOUT = 60.0
PARTITION_CHECK_INTERVAL = 6 * 3600.0


class ServerStartError(Exception):
    """The server cannot start (database unreachable or lacking privileges, bad options, port in use)."""


class Server:
    """One central server process. `key_factory` replaces RSA key generation (tests, benchmarks)."""

    def __init__(self, cfg: Config, *, keylog_path: str | Path | None = None, key_factory: KeyFactory | None = None,
                 sink: PacketSink | None = None) -> None:
        self.cfg = cfg
        self.stats = ServerStats()
        self.registry = Registry()
        self.keylog_path = keylog_path
        self._key_factory = key_factory
        self._sink = sink
        self._shutdown = trio.Event()
        self.stopped = trio.Event()  # set when run() has released everything (spools closed, database stopped)
        self.ctx: ServerContext | None = None
        self.addresses: list[tuple[str, int]] = []
        self.metrics_address: tuple[str, int] | None = None  # prometheus_bind, once bound
        # Absolute: mariadb-install-db and mariadbd run with other working directories (a relative datadir fails).
        self.datadir = Path(str(cfg.get("datadir", "") or DEFAULT_DATADIR)).resolve()

    def request_shutdown(self) -> None:
        """Begin the orderly shutdown (idempotent; safe from a signal-handling task)."""
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        """Start everything, serve until `request_shutdown()`, stop everything. `task_status.started` receives the
        bound (host, port) addresses. Raises ServerStartError when start-up fails."""
        cfg = self.cfg
        keylog = KeyLog(self.keylog_path) if self.keylog_path else None
        try:
            async with trio.open_nursery() as infra:
                params = await self._database_params(infra)
                pool = Pool(params, size=int(cfg.get("server_db_pool_size", 16)))
                try:
                    await self._prepare_database(pool)
                    await self._serve(infra, pool, keylog, task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        await pool.aclose()
                infra.cancel_scope.cancel()
        finally:
            if keylog is not None:
                keylog.close()
            self.stopped.set()
        log_event(log, logging.INFO, "server stopped", uptime=round(time.time() - self.stats.started_at, 1))

    # --- start-up --------------------------------------------------------------------------------------------
    async def _database_params(self, nursery: trio.Nursery) -> ConnectParams:
        cfg = self.cfg
        database = str(cfg.get("mysqldb", "voipmonitor"))
        host, sock = str(cfg.get("mysqlhost", "") or ""), str(cfg.get("mysqlsocket", "") or "")
        if not host and not sock:
            try:
                return await start_embedded(nursery, self.datadir, database)
            except (EmbeddedDatabaseError, DatabaseError) as exc:
                raise ServerStartError(f"embedded database: {exc}") from exc
        params = ConnectParams(database=database, user=str(cfg.get("mysqlusername", "root")),
                               password=str(cfg.get("mysqlpassword", "")), unix_socket=sock or None,
                               host=host or "127.0.0.1", port=int(cfg.get("mysqlport", 3306)))
        await self._create_database(params)
        return params

    async def _create_database(self, params: ConnectParams) -> None:
        # The reference creates its database on first start; without the privilege we go on and let the
        # schema step report what is missing.
        deadline = trio.current_time() + float(self.cfg.get("mysql_connect_timeout_s", DB_START_TIMEOUT))
        backoff = 0.5
        while True:
            try:
                admin = await Connection.open(ConnectParams(database="", user=params.user, password=params.password,
                                                            unix_socket=params.unix_socket, host=params.host,
                                                            port=params.port))
                break
            except PrivilegeError as exc:
                raise ServerStartError(str(exc)) from exc
            except ConnectionLostError as exc:
                if trio.current_time() + backoff > deadline:
                    raise ServerStartError(f"database unreachable: {exc.message}") from exc
                log_event(log, logging.WARNING, "database unreachable, retrying", error=exc.message, wait=backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        try:
            await admin.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(params.database)}",
                                privilege="CREATE")
        except DatabaseError as exc:
            log_event(log, logging.WARNING, "cannot create database", database=params.database, error=exc.message)
        finally:
            await admin.aclose()

    async def _prepare_database(self, pool: Pool) -> None:
        cfg = self.cfg
        try:
            async with pool.connection() as conn:
                log_event(log, logging.INFO, "schema check", database=pool.params.database,
                          partitioned=int(bool(cfg.get("cdr_partition", True))))
                await ensure_schema(conn, partitioned=bool(cfg.get("cdr_partition", True)))
                if cfg.get("mysqlloadconfig", True):
                    await self._load_options(conn)
        except PrivilegeError as exc:
            raise ServerStartError(f"database privileges: {exc}") from exc
        except DatabaseError as exc:
            raise ServerStartError(f"database preparation failed: {exc}") from exc

    async def _load_options(self, conn: Connection) -> None:
        """mysqlloadconfig: options from the sensor_config table override the file (reference behaviour)."""
        id_sensor = int(self.cfg.get("id_sensor", -1))
        try:
            options = await load_sensor_config(conn, id_sensor if id_sensor > 0 else None)
        except SqlError as exc:
            log_event(log, logging.WARNING, "mysqlloadconfig: sensor_config not readable", error=exc.message)
            return
        for name, value in options.items():
            try:
                option(name)
            except KeyError:
                log_event(log, logging.WARNING, "mysqlloadconfig: unknown option ignored", option=name)
                continue
            try:
                self.cfg.set(name, value)
            except ConfigError as exc:
                log_event(log, logging.WARNING, "mysqlloadconfig: bad value ignored", option=name, error=str(exc))
                continue
            log_event(log, logging.INFO, "mysqlloadconfig: option loaded", option=name)

    def _manager_key(self) -> ManagerAesKey | None:
        key, iv = self.cfg.get("manager_aes_key", ""), self.cfg.get("manager_aes_iv", "")
        if not key and not iv:
            return None
        try:
            return ManagerAesKey.from_base64(key, iv)
        except LocalProtocolError as exc:
            raise ServerStartError(f"manager_aes_key/manager_aes_iv: {exc}") from exc

    def _key_pool(self) -> RsaKeyPool:
        n = max(0, int(self.cfg.get("server_rsa_key_pool", 8)))
        targets = {4096: n // 2, 2048: 2 * n}
        if self._key_factory is not None:
            return RsaKeyPool(targets, self._key_factory, threads=2)
        return RsaKeyPool(targets, threads=2)

    # --- serving ---------------------------------------------------------------------------------------------
    async def _serve(self, infra: trio.Nursery, pool: Pool, keylog: KeyLog | None,
                     task_status: trio.TaskStatus[Any]) -> None:
        cfg = self.cfg
        keypool = self._key_pool()
        await infra.start(keypool.run)
        if cfg.get("cdr_partition", True):
            infra.start_soon(self._partition_maintenance, pool)
        async with trio.open_nursery() as writer_nursery:
            writers = StoreWriters(pool, writer_nursery, queue_limit=int(cfg.get("server_sql_queue_limit", 1_000_000)))
            sink = self._sink or await self._packet_sink(writers, writer_nursery)
            ctx = ServerContext(cfg=cfg, stats=self.stats, registry=self.registry, keypool=keypool, pool=pool,
                                writers=writers, sink=sink, keylog=keylog, manager_key=self._manager_key(),
                                db_ready=True)
            self.ctx = ctx
            try:  # issue 9: /metrics and /status; up during the shutdown grace, stops with the infrastructure
                self.metrics_address = await start_endpoint(infra, cfg.get("prometheus_bind", ""),
                                                            ServerCollector(self), lambda: server_status(self))
            except MetricsStartError as exc:
                raise ServerStartError(str(exc)) from exc
            listener = Listener(str(cfg.get("server_bind", "") or ""), int(cfg.get("server_bind_port", 60024)),
                                lambda stream, peer: handle_connection(ctx, stream, peer),
                                max_per_address=int(cfg.get("server_max_connections_per_ip", 256)),
                                on_refused=lambda ip: ctx.stats.refused.update(["per-address cap"]))
            async with trio.open_nursery() as connections:
                listen_scope = trio.CancelScope()

                async def listen(*, task_status: trio.TaskStatus[Any]) -> None:
                    with listen_scope:
                        await listener.serve(connections, task_status=task_status)

                try:
                    self.addresses = await connections.start(listen)
                except OSError as exc:
                    raise ServerStartError(f"cannot listen on {listener.host or '*'}:{listener.port}: "
                                           f"{exc.strerror or exc}") from exc
                log_event(log, logging.INFO, "server started", port=self.addresses[0][1],
                          database=pool.params.database, embedded=int(not cfg.get("mysqlhost") and
                                                                      not cfg.get("mysqlsocket")))
                task_status.started(self.addresses)
                await self._shutdown.wait()
                await self._begin_shutdown(ctx, listen_scope, connections)
            # Before the writers stop: the central analysis commits the CDRs of calls still open (spec §9).
            with trio.CancelScope(shield=True):
                await sink.aclose()
            writer_nursery.cancel_scope.cancel()

    async def _packet_sink(self, writers: StoreWriters, nursery: trio.Nursery) -> PacketSink:
        """Where accepted packetbuffer packets go: the central call analysis (`server_pb_analysis`, default yes —
        mirrored packets become CDRs as if sniffed here) and/or a raw pcap spool (`server_pb_spool` directory)."""
        cfg = self.cfg
        sinks: list[PacketSink] = []
        if cfg.get("server_pb_analysis", True):
            base = analyzer_config(cfg)
            analysis = CentralAnalysis(
                lambda message: writers.get(message.id_main).submit(message),
                decode_options=decode_options(cfg),
                analyzer_config=lambda id_sensor: dataclasses.replace(
                    base, id_sensor=id_sensor if id_sensor >= 0 else None),
                spool=await self._call_spool(nursery),
            )
            await nursery.start(analysis.run_sweeper)
            sinks.append(analysis)
        if cfg.get("server_pb_spool", ""):
            sinks.append(PcapSpool(Path(str(cfg.get("server_pb_spool")))))
        return FanOut(sinks)

    async def _call_spool(self, nursery: trio.Nursery) -> SpoolWriter | None:
        """The central's per-call PCAP spool for mirrored calls (savesip / savertp, spooldir, the maxpool* limits),
        as a sensor keeps for the calls it sniffs; None when nothing is to be saved."""
        try:
            opts = SpoolOptions.from_config(self.cfg)
        except SpoolOptionError as exc:
            raise ServerStartError(str(exc)) from exc
        if not opts.enabled:
            return None
        index = SpoolIndex()
        spool = SpoolWriter(opts, index)
        await nursery.start(spool.run)
        if opts.cleanspool:
            cleaner = SpoolCleaner(opts.spooldirs, index, opts.limits, interval=opts.cleanspool_interval,
                                   busy_units=spool.busy_units)
            await nursery.start(cleaner.run)
        return spool

    async def _begin_shutdown(self, ctx: ServerContext, listen_scope: trio.CancelScope,
                              connections: trio.Nursery) -> None:
        grace = float(self.cfg.get("server_shutdown_grace_s", 10))
        log_event(log, logging.INFO, "shutdown: stop accepting", connections=len(ctx.live), grace=grace)
        ctx.shutting_down = True
        listen_scope.cancel()
        for live in list(ctx.live.values()):
            if live.type == "store" and live.io is not None:
                live.io.push(SHUTDOWN)  # finishes the message being applied (commit + OK), then closes
            else:
                live.scope.cancel()
        connections.cancel_scope.deadline = trio.current_time() + grace

    async def _partition_maintenance(self, pool: Pool) -> None:
        while True:
            await trio.sleep(PARTITION_CHECK_INTERVAL)
            try:
                async with pool.connection() as conn:
                    added = await ensure_partitions(conn)
                if added:
                    log_event(log, logging.INFO, "partitions added", count=len(added))
            except DatabaseError as exc:
                log_event(log, logging.ERROR, "partition maintenance failed", error=exc.message)

    @property
    def port(self) -> int:
        """The first bound port (after start-up)."""
        return self.addresses[0][1] if self.addresses else 0

