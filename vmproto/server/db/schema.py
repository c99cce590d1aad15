"""Create and upgrade the central database's schema; keep the daily/monthly partitions ahead of time.

`ensure_schema` is safe on every start: missing tables are created, existing tables are left alone except
that columns a newer vmproto defines are added, missing stored functions are created, and partitioned
tables get their partitions for today and the next days. Every step is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .connection import Connection
from .ddl import (
    add_column_sql,
    add_partitions_sql,
    create_table_sql,
    partition_horizon,
    partitions_between,
    partitions_covering,
)
from .errors import PrivilegeError, SchemaError, SqlError
from .model import Table
from .routines import LOOKUP_FUNCTIONS, create_function_sql
from .tables import TABLES

__all__ = ["SchemaReport", "ensure_partitions", "ensure_schema", "existing_columns"]

log = logging.getLogger(__name__)

DEFAULT_DAYS_AHEAD = 2


@dataclass(slots=True)
class SchemaReport:
    """What ensure_schema changed: table names, "table.column" names, function names, partition names."""

    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    created_functions: list[str] = field(default_factory=list)
    added_partitions: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created_tables or self.added_columns or self.created_functions or self.added_partitions)


async def existing_columns(conn: Connection) -> dict[str, list[str]]:
    """Return {lower-case table name: [column names in order]} for every table of the current database."""
    result = await conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for tname, cname in result.rows:
        tables.setdefault(_text(tname).lower(), []).append(_text(cname))
    return tables


async def ensure_schema(
    conn: Connection,
    *,
    partitioned: bool = True,
    today: dt.date | None = None,
    days_ahead: int = DEFAULT_DAYS_AHEAD,
    tables: Iterable[Table] = TABLES,
) -> SchemaReport:
    """Bring the current database up to the schema in tables.py.

    `partitioned` is the reference's `cdr_partition` option: new partitionable tables get RANGE partitions
    from `today` (default: the local date) for `days_ahead` more days (monthly tables: this and the next
    month). Returns what changed. Raises PrivilegeError naming the missing privilege (CREATE, ALTER,
    CREATE ROUTINE) or SchemaError for any other failure, with the step that failed.
    """
    today = today or dt.date.today()
    report = SchemaReport()
    existing = await existing_columns(conn)
    for table in tables:
        have = existing.get(table.name.lower())
        if have is None:
            specs = None
            if partitioned and table.partitioning is not None:
                specs = partitions_covering(table.partitioning.period, today, days_ahead)
            log.info("schema: creating table %s%s", table.name, " (partitioned)" if specs else "")
            await _step(conn, create_table_sql(table, specs), "CREATE", f"create table {table.name}")
            report.created_tables.append(table.name)
            continue
        have_lower = {c.lower() for c in have}
        previous: str | None = None
        for column in table.columns:
            if column.name.lower() not in have_lower:
                log.info("schema: adding column %s.%s", table.name, column.name)
                await _step(conn, add_column_sql(table, column, previous), "ALTER",
                            f"add column {table.name}.{column.name}")
                report.added_columns.append(f"{table.name}.{column.name}")
            previous = column.name
    await _ensure_functions(conn, report)
    if partitioned:
        report.added_partitions += await ensure_partitions(conn, today=today, days_ahead=days_ahead,
                                                          tables=tables)
    if report.changed:
        log.info("schema: done (%d tables, %d columns, %d functions, %d partitions added)",
                 len(report.created_tables), len(report.added_columns), len(report.created_functions),
                 len(report.added_partitions))
    else:
        log.info("schema: up to date")
    return report


async def _ensure_functions(conn: Connection, report: SchemaReport) -> None:
    result = await conn.execute(
        "SELECT routine_name FROM information_schema.routines "
        "WHERE routine_schema = DATABASE() AND routine_type = 'FUNCTION'"
    )
    have = {_text(r[0]).lower() for r in result.rows}
    for fn in LOOKUP_FUNCTIONS:
        if fn.name.lower() in have:
            continue
        log.info("schema: creating function %s", fn.name)
        await _step(conn, create_function_sql(fn), "CREATE ROUTINE", f"create function {fn.name}")
        report.created_functions.append(fn.name)


_BOUND = re.compile(r"^'?(\d{4})-(\d{2})-(\d{2})")


async def ensure_partitions(
    conn: Connection,
    *,
    today: dt.date | None = None,
    days_ahead: int = DEFAULT_DAYS_AHEAD,
    tables: Iterable[Table] = TABLES,
) -> list[str]:
    """Add the partitions missing between the highest existing one and ddl.partition_horizon (the end of
    `today` + `days_ahead` for daily tables, of the next month for monthly ones), for every partitioned
    table of ours that exists partitioned.

    This is the maintenance function: run it at start and then daily. Returns "table.partition" names
    added. Raises PrivilegeError (ALTER) or SchemaError.
    """
    today = today or dt.date.today()
    result = await conn.execute(
        "SELECT table_name, partition_description FROM information_schema.partitions "
        "WHERE table_schema = DATABASE() AND partition_name IS NOT NULL"
    )
    highest: dict[str, dt.date] = {}
    for tname, desc in result.rows:
        m = _BOUND.match(_text(desc)) if desc is not None else None
        if m is None:
            continue  # MAXVALUE or a foreign scheme: nothing we can extend
        bound = dt.date(int(m[1]), int(m[2]), int(m[3]))
        key = _text(tname).lower()
        highest[key] = max(bound, highest.get(key, bound))
    added: list[str] = []
    for table in tables:
        if table.partitioning is None or table.name.lower() not in highest:
            continue
        period = table.partitioning.period
        specs = partitions_between(period, highest[table.name.lower()], partition_horizon(period, today, days_ahead))
        if specs:
            log.info("schema: adding partitions %s to %s", ", ".join(s.name for s in specs), table.name)
            await _step(conn, add_partitions_sql(table.name, specs), "ALTER", f"add partitions to {table.name}")
            added += [f"{table.name}.{s.name}" for s in specs]
    return added


async def _step(conn: Connection, sql: str, privilege: str, what: str) -> None:
    try:
        await conn.execute(sql, privilege=privilege)
    except PrivilegeError:
        raise
    except SqlError as exc:
        raise SchemaError(f"schema step failed: {what}: {exc.message} (error {exc.errno})", exc.errno) from exc


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""
