"""Start-up preparation and periodic upkeep of the central database.

`prepare_database` creates the database when allowed and brings its schema up to date; `maintenance_loop`
keeps partitions ahead of the calendar and prunes old store digests, once at start and then every
`interval` seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import trio

from .connection import Connection, ConnectParams, Pool, quote_identifier
from .errors import DatabaseError
from .schema import DEFAULT_DAYS_AHEAD, SchemaReport, ensure_partitions, ensure_schema
from .tables import STORE_APPLIED_TABLE

__all__ = ["DIGEST_RETENTION", "maintenance_loop", "prepare_database", "prune_applied_digests"]

log = logging.getLogger(__name__)

# A sensor resends an unacknowledged message within minutes (spec §8 retry timing); a week is ample.
DIGEST_RETENTION = dt.timedelta(days=7)


async def prepare_database(
    params: ConnectParams,
    *,
    create_database: bool = True,
    partitioned: bool = True,
    days_ahead: int = DEFAULT_DAYS_AHEAD,
) -> SchemaReport:
    """Create `params.database` if it is missing (when `create_database`), then run ensure_schema.

    Returns the schema report. Raises PrivilegeError naming what is missing (e.g. CREATE on the
    database), ConnectionLostError when the server is unreachable, SchemaError for other failures.
    """
    if create_database:
        admin = await Connection.open(dataclasses.replace(params, database=""))
        try:
            log.info("schema: ensuring database %s exists", params.database)
            await admin.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_identifier(params.database)}", privilege="CREATE"
            )
        finally:
            await admin.aclose()
    conn = await Connection.open(params)
    try:
        return await ensure_schema(conn, partitioned=partitioned, days_ahead=days_ahead)
    finally:
        await conn.aclose()


async def prune_applied_digests(conn: Connection, older_than: dt.timedelta = DIGEST_RETENTION) -> int:
    """Delete store digests older than `older_than`; returns how many rows went."""
    seconds = int(older_than.total_seconds())
    result = await conn.execute(
        f"DELETE FROM {quote_identifier(STORE_APPLIED_TABLE.name)} "
        f"WHERE applied_at < NOW() - INTERVAL {seconds:d} SECOND",
        privilege="DELETE",
    )
    if result.affected_rows:
        log.info("store: pruned %d applied-message digests", result.affected_rows)
    return result.affected_rows


async def maintenance_loop(
    pool: Pool,
    *,
    interval: float = 3600.0,
    partitioned: bool = True,
    days_ahead: int = DEFAULT_DAYS_AHEAD,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every `interval` seconds (first run at once): add due partitions and prune digests.

    Database errors are logged and retried at the next run; the loop ends only by cancellation.
    """
    task_status.started()
    while True:
        try:
            async with pool.connection() as conn:
                if partitioned:
                    await ensure_partitions(conn, days_ahead=days_ahead)
                await prune_applied_digests(conn)
        except DatabaseError as exc:
            log.error("db maintenance failed, retrying in %.0fs: %s", interval, exc)
        await trio.sleep(interval)
