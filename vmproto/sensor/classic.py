"""Classic mode: the sensor writes its own CDRs into MariaDB (`mysqlhost` or `mysqlsocket` set, no central).

One code path for "the SQL of a CDR into a database": each CDR becomes the id_main 10 body that a sensor
would send on the store channel (`vmproto.sensor.cdr.sql.store_sql`), and runs through the central's own
store execution (`vmproto.server.db.store`: procedure wrapping, one transaction per message, idempotence
digest). The schema is created or upgraded at start by `vmproto.server.db.schema.ensure_schema`.

Each CDR is one message by default (`batch_size` 1): the idempotence digest covers a whole message, so only
one CDR per message makes "already applied" a property of the CDR itself — replaying the same capture into
the same database then never inserts a CDR twice (counted as `duplicates`), however the CDRs happened to be
grouped. With `batch_size` > 1, CDRs ready together share a message (fewer transactions) and that guarantee
holds only for identical groupings. A failed message's CDRs are retried one by one so a single bad CDR cannot
take the others with it; a CDR whose SQL the database still refuses is counted in `failed`, never retried
forever.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.sensor.cdr.sql import store_sql
from vmproto.server.db.connection import ConnectParams, Pool
from vmproto.server.db.errors import ConnectionLostError, DatabaseError
from vmproto.server.db.schema import ensure_partitions, ensure_schema
from vmproto.server.db.store import StoreMessage, StoreWriter
from vmproto.wire.crypto import ManagerAesKey
from vmproto.wire.errors import ProtocolError

__all__ = ["ClassicCdrSink", "SinkSummary", "classic_mode", "connect_params", "load_manager_key"]

log = logging.getLogger("vmproto.sensor.classic")

ID_MAIN_CDR = 10
PARTITION_CHECK_S = 6 * 3600


@dataclass(slots=True)
class SinkSummary:
    """What a CDR sink did: CDRs handed in, committed (new), already present, and the ones that failed
    (`failed` holds "<fbasename>: <reason>")."""

    submitted: int = 0
    committed: int = 0
    duplicates: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def outstanding(self) -> int:
        """CDRs neither committed, nor found present, nor failed (still queued or lost at stop)."""
        return self.submitted - self.committed - self.duplicates - len(self.failed)


def classic_mode(cfg: Any) -> bool:
    """True when the configuration asks the sensor to write CDRs itself (a database is configured)."""
    return bool(cfg.get("mysqlhost", "") or cfg.get("mysqlsocket", ""))


def connect_params(cfg: Any) -> ConnectParams:
    """The database of `mysqlhost`/`mysqlport`/`mysqlsocket`/`mysqlusername`/`mysqlpassword`/`mysqldb`."""
    return ConnectParams(
        database=str(cfg.get("mysqldb", "voipmonitor")),
        user=str(cfg.get("mysqlusername", "root")),
        password=str(cfg.get("mysqlpassword", "")),
        unix_socket=str(cfg.get("mysqlsocket", "")) or None,
        host=str(cfg.get("mysqlhost", "") or "127.0.0.1"),
        port=int(cfg.get("mysqlport", 3306)),
    )


async def load_manager_key(pool: Pool) -> ManagerAesKey | None:
    """The manager AES key stored in the database (`system` row of type `manager_key`, content
    `{"key": "<base64>", "iv": "<base64>"}`), or None when there is none or it is unusable (logged)."""
    try:
        result = await pool.run("SELECT content FROM `system` WHERE type = 'manager_key' LIMIT 1")
    except DatabaseError as exc:
        log_event(log, logging.WARNING, "manager key not readable from database", error=exc.message)
        return None
    if not result.rows or result.rows[0][0] is None:
        return None
    try:
        doc = json.loads(result.rows[0][0])
        return ManagerAesKey.from_base64(doc["key"], doc["iv"])
    except (ValueError, KeyError, TypeError, ProtocolError) as exc:
        log_event(log, logging.WARNING, "manager key in database unusable", error=str(exc))
        return None


class ClassicCdrSink:
    """CDR sink writing to MariaDB (see the module docstring). A `CdrSink` for vmproto.sensor.app.

    `await nursery.start(sink.run)` connects and prepares the schema (raising DatabaseError when that
    fails), then writes what `submit` queues; `aclose()` waits until everything queued is written.
    """

    def __init__(self, params: ConnectParams, *, id_sensor: int | None = None, partitioned: bool = True,
                 batch_size: int = 1, queue_size: int = 10_000, pool_size: int = 2) -> None:
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        self.params = params
        self.id_sensor = id_sensor if id_sensor is not None and id_sensor >= 0 else 0
        self.partitioned = partitioned
        self.batch_size = batch_size
        self.pool = Pool(params, size=pool_size)
        self.summary = SinkSummary()
        self._send, self._receive = trio.open_memory_channel[CdrRecord](queue_size)
        self._done = trio.Event()
        self._closing = False

    async def prepare(self) -> None:
        """Create or upgrade the schema. Raises DatabaseError (PrivilegeError, SchemaError, ...)."""
        async with self.pool.connection() as conn:
            report = await ensure_schema(conn, partitioned=self.partitioned)
        log_event(log, logging.INFO, "classic database ready", db=self.params.database,
                  created_tables=len(report.created_tables), added_columns=len(report.added_columns))

    async def submit(self, cdr: CdrRecord) -> None:
        """Queue one CDR; waits while `queue_size` CDRs are already waiting (back-pressure)."""
        self.summary.submitted += 1
        await self._send.send(cdr)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Prepare the database, then write queued CDRs until `aclose`."""
        try:
            await self.prepare()
            writer = StoreWriter(self.pool, ID_MAIN_CDR, queue_limit=2)
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                if self.partitioned:
                    nursery.start_soon(self._partitions)
                task_status.started()
                async with self._receive:
                    async for first in self._receive:
                        batch = [first]
                        while len(batch) < self.batch_size:
                            try:
                                batch.append(self._receive.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        await self._write(writer, batch)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.pool.aclose()
            self._done.set()

    async def _partitions(self) -> None:
        # A long-running sensor needs tomorrow's partitions before midnight.
        while True:
            await trio.sleep(PARTITION_CHECK_S)
            try:
                async with self.pool.connection() as conn:
                    await ensure_partitions(conn)
            except DatabaseError as exc:
                log_event(log, logging.ERROR, "partition maintenance failed", error=exc.message)

    async def _write(self, writer: StoreWriter, batch: list[CdrRecord]) -> None:
        try:
            await self._apply(writer, batch)
        except DatabaseError as exc:
            if len(batch) == 1:
                self._failed(batch[0], exc)
                return
            log_event(log, logging.WARNING, "cdr batch failed, retrying one by one", cdrs=len(batch),
                      error=exc.message)
            for cdr in batch:
                try:
                    await self._apply(writer, [cdr])
                except DatabaseError as exc1:
                    self._failed(cdr, exc1)

    async def _apply(self, writer: StoreWriter, batch: list[CdrRecord]) -> None:
        queries = tuple(store_sql(c).encode("utf-8", "surrogateescape") for c in batch)
        result = await writer.submit(StoreMessage(self.id_sensor, ID_MAIN_CDR, queries))
        if result.applied:
            self.summary.committed += len(batch)
        else:
            self.summary.duplicates += len(batch)
            log_event(log, logging.INFO, "cdrs already in the database, skipped", cdrs=len(batch))

    def _failed(self, cdr: CdrRecord, exc: DatabaseError) -> None:
        self.summary.failed.append(f"{cdr.fbasename}: {exc.message}")
        log_event(log, logging.ERROR, "cdr not stored", fbasename=cdr.fbasename, error=exc.message)
        if isinstance(exc, ConnectionLostError):
            log_event(log, logging.ERROR, "database writer stopped")

    async def aclose(self) -> None:
        """Stop taking CDRs and wait until every queued one is written (or failed)."""
        if not self._closing:
            self._closing = True
            await self._send.aclose()
        await self._done.wait()

    def close_nowait(self) -> None:
        """Stop taking CDRs without waiting (shutdown after an error)."""
        self._closing = True
        self._send.close()

