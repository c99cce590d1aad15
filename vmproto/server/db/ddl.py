"""SQL text generated from the schema data (model.py): CREATE TABLE, ADD COLUMN, partition clauses.

Pure functions of their arguments (dates are arguments), so tests check the DDL without a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from .connection import quote_identifier as q
from .model import Column, Partitioning, PartitionPeriod, Table

__all__ = [
    "PartitionSpec",
    "add_column_sql",
    "add_partitions_sql",
    "column_sql",
    "create_table_sql",
    "partition_for",
    "partition_horizon",
    "partitions_between",
    "partitions_covering",
]


def column_sql(column: Column) -> str:
    """Return the column definition, e.g. "`ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT"."""
    parts = [q(column.name), column.type]
    if column.charset:
        parts.append(f"CHARACTER SET {column.charset}")
    parts.append("NULL" if column.nullable else "NOT NULL")
    if column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    if column.auto_increment:
        parts.append("AUTO_INCREMENT")
    return " ".join(parts)


class PartitionSpec(tuple[str, dt.date]):
    """(name, upper bound): the partition holds rows whose partition column is before `bound`."""

    __slots__ = ()

    def __new__(cls, name: str, bound: dt.date) -> PartitionSpec:
        return super().__new__(cls, (name, bound))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def bound(self) -> dt.date:
        return self[1]

    def sql(self) -> str:
        return f"PARTITION {q(self.name)} VALUES LESS THAN ('{self.bound.isoformat()}')"


def partition_for(period: PartitionPeriod, day: dt.date) -> PartitionSpec:
    """Return the partition holding `day`: pYYMMDD up to the next day, or pYYMM up to the next month
    (the reference's naming, which GUI tools and the sensors' partition checks recognise)."""
    if period is PartitionPeriod.DAILY:
        return PartitionSpec(f"p{day:%y%m%d}", day + dt.timedelta(days=1))
    first_next = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return PartitionSpec(f"p{day:%y%m}", first_next)


def partition_horizon(period: PartitionPeriod, today: dt.date, days_ahead: int) -> dt.date:
    """Return the date up to which partitions must exist: the end of day `today + days_ahead` for daily
    tables; for monthly ones the end of the month after the one holding that day (the reference keeps
    this month's and next month's)."""
    last = partition_for(period, today + dt.timedelta(days=days_ahead))
    return last.bound if period is PartitionPeriod.DAILY else partition_for(period, last.bound).bound


def partitions_between(period: PartitionPeriod, start: dt.date, horizon: dt.date) -> list[PartitionSpec]:
    """Return the partitions from the one holding `start` until one reaches `horizon`, in order (empty
    when `start` is at or past `horizon`)."""
    specs: list[PartitionSpec] = []
    day = start
    while day < horizon:
        specs.append(partition_for(period, day))
        day = specs[-1].bound
    return specs


def partitions_covering(period: PartitionPeriod, today: dt.date, days_ahead: int) -> list[PartitionSpec]:
    """Return the initial partitions of a new table: from today's up to partition_horizon."""
    return partitions_between(period, today, partition_horizon(period, today, days_ahead))


def create_table_sql(table: Table, partitions: Iterable[PartitionSpec] | None = None) -> str:
    """Return CREATE TABLE IF NOT EXISTS for `table`.

    `partitions` (only for a partitioned table) lists the initial partitions; None or empty creates the
    table unpartitioned (the `cdr_partition = no` set-up).
    """
    lines = [column_sql(c) for c in table.columns]
    if table.primary_key:
        lines.append(f"PRIMARY KEY ({', '.join(q(c) for c in table.primary_key)})")
    for index in table.indexes:
        kind = "UNIQUE KEY" if index.unique else "KEY"
        lines.append(f"{kind} {q(index.name)} ({', '.join(q(c) for c in index.columns)})")
    sql = (
        f"CREATE TABLE IF NOT EXISTS {q(table.name)} (\n  " + ",\n  ".join(lines) + "\n"
        f") ENGINE=InnoDB DEFAULT CHARSET={table.charset}"
    )
    specs = list(partitions or ())
    if specs:
        if table.partitioning is None:
            raise ValueError(f"table {table.name} is not partitioned")
        sql += "\nPARTITION BY RANGE COLUMNS(" + q(table.partitioning.column) + ")\n(" + ",\n ".join(
            s.sql() for s in specs
        ) + ")"
    return sql


def add_column_sql(table: Table, column: Column, after: str | None) -> str:
    """Return ALTER TABLE ... ADD COLUMN placing `column` after column `after` (first when None)."""
    where = f"AFTER {q(after)}" if after else "FIRST"
    return f"ALTER TABLE {q(table.name)} ADD COLUMN {column_sql(column)} {where}"


def add_partitions_sql(table_name: str, specs: Iterable[PartitionSpec]) -> str:
    """Return ALTER TABLE ... ADD PARTITION for `specs` (which must lie above every existing bound)."""
    return f"ALTER TABLE {q(table_name)} ADD PARTITION (" + ", ".join(s.sql() for s in specs) + ")"


def partitioning_of(table: Table) -> Partitioning:
    """Return the table's partitioning. Raises ValueError for an unpartitioned table."""
    if table.partitioning is None:
        raise ValueError(f"table {table.name} is not partitioned")
    return table.partitioning
