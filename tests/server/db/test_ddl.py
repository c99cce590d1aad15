"""DDL generation and the schema data, without a database."""

from __future__ import annotations

import datetime as dt

import pytest

from vmproto.server.db.ddl import (
    add_column_sql,
    column_sql,
    create_table_sql,
    partition_for,
    partition_horizon,
    partitions_covering,
)
from vmproto.server.db.model import Column, Index, PartitionPeriod, Table
from vmproto.server.db.routines import LOOKUP_FUNCTIONS, create_function_sql
from vmproto.server.db.tables import TABLES, table

DAILY, MONTHLY = PartitionPeriod.DAILY, PartitionPeriod.MONTHLY


def test_column_sql():
    assert column_sql(Column("ID", "bigint(20) unsigned", nullable=False, auto_increment=True)) == (
        "`ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT"
    )
    assert column_sql(Column("n", "int(10) unsigned", default="0")) == "`n` int(10) unsigned NULL DEFAULT 0"
    assert column_sql(Column("t", "mediumtext", charset="utf8mb3")) == "`t` mediumtext CHARACTER SET utf8mb3 NULL"


def test_partition_names_and_bounds():
    assert partition_for(DAILY, dt.date(2026, 11, 26)) == ("p261126", dt.date(2026, 11, 27))
    assert partition_for(MONTHLY, dt.date(2026, 12, 31)) == ("p2612", dt.date(2027, 1, 1))
    assert [p.name for p in partitions_covering(DAILY, dt.date(2026, 11, 26), 2)] == ["p261126", "p261127", "p261128"]
    assert [p.name for p in partitions_covering(MONTHLY, dt.date(2026, 11, 26), 2)] == ["p2611", "p2612"]
    assert partition_horizon(MONTHLY, dt.date(2026, 11, 30), 2) == dt.date(2027, 2, 1)
    assert partition_horizon(DAILY, dt.date(2028, 2, 28), 1) == dt.date(2028, 3, 1)


def test_create_table_sql_shape():
    sql = create_table_sql(table("cdr_next"), partitions_covering(DAILY, dt.date(2026, 11, 26), 0))
    assert sql.startswith("CREATE TABLE IF NOT EXISTS `cdr_next` (\n  `cdr_ID` bigint(20) unsigned NOT NULL,")
    assert "PRIMARY KEY (`cdr_ID`, `calldate`)" in sql and "KEY `fbasename` (`fbasename`)" in sql
    assert sql.endswith(
        "ENGINE=InnoDB DEFAULT CHARSET=latin1\nPARTITION BY RANGE COLUMNS(`calldate`)\n"
        "(PARTITION `p261126` VALUES LESS THAN ('2026-11-27'))"
    )
    with pytest.raises(ValueError):
        create_table_sql(table("sensors"), partitions_covering(DAILY, dt.date(2026, 11, 26), 0))
    assert add_column_sql(table("cdr_next"), table("cdr_next").column("hold"), "GeoPosition") == (
        "ALTER TABLE `cdr_next` ADD COLUMN `hold` varchar(1024) NULL AFTER `GeoPosition`"
    )


def test_model_rejects_bad_definitions():
    with pytest.raises(ValueError):
        Column("x y", "int(11)")
    with pytest.raises(ValueError):
        Column("x", "int(11); DROP TABLE t")
    with pytest.raises(ValueError):
        Table("t", (Column("a", "int(11)"),), indexes=(Index("b", ("b",)),))
    with pytest.raises(ValueError):
        Table("t", (Column("a", "int(11)"), Column("A", "int(11)")))


def test_schema_data_is_consistent():
    names = [t.name.lower() for t in TABLES]
    assert len(names) == len(set(names))
    for t in TABLES:
        if t.partitioning:
            # MariaDB requires every unique key of a partitioned table to contain the partition column.
            for key in (t.primary_key, *(i.columns for i in t.indexes if i.unique)):
                if key:
                    assert t.partitioning.column in key, t.name
    for fn in LOOKUP_FUNCTIONS:
        lookup = table(fn.table)
        lookup.column(fn.value_column)
        assert any(i.unique or i.columns[0] == fn.value_column for i in lookup.indexes), fn.name
        assert create_function_sql(fn).startswith(f"CREATE FUNCTION `{fn.name}`(")
