"""The schema as data: tables, columns, indexes and partitioning, from which ddl.py generates SQL.

Values are frozen dataclasses so a table definition can be compared, listed in tests and diffed against
the reference schema (schema/tables.tsv) without touching a database.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["Column", "Index", "PartitionPeriod", "Partitioning", "Table"]

_TYPE = re.compile(
    r"^(?:(?:tiny|small|medium|big)?int\(\d+\)(?: unsigned)?|int(?: unsigned)?|decimal\(\d+,\d+\)"
    r"|double|float|date|datetime|time|timestamp|(?:var)?char\(\d+\)|(?:tiny|medium|long)?text"
    r"|(?:tiny|medium|long)?blob|(?:var)?binary\(\d+\)|(?:enum|set)\('[^']*'(?:,'[^']*')*\))$"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class PartitionPeriod(enum.Enum):
    """How wide one RANGE partition is. The reference names them pYYMMDD (daily) and pYYMM (monthly)."""

    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class Partitioning:
    """RANGE COLUMNS partitioning on a datetime `column`, one partition per `period`."""

    column: str
    period: PartitionPeriod


@dataclass(frozen=True, slots=True)
class Column:
    """One column. `type` is written the way MariaDB reports it (`SHOW COLUMNS`), e.g. "int(10) unsigned".

    `default` None means no DEFAULT clause beyond the implicit NULL of a nullable column; otherwise it is
    the SQL text of the default (e.g. "0"). `charset` overrides the table's character set.
    """

    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    auto_increment: bool = False
    charset: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad column name {self.name!r}")
        if not _TYPE.match(self.type):
            raise ValueError(f"column {self.name}: unsupported type {self.type!r}")


@dataclass(frozen=True, slots=True)
class Index:
    """A secondary index (`KEY name (cols)`), unique or not."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """One table: columns in order, primary key, secondary indexes, default character set, partitioning."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    charset: str = "latin1"
    partitioning: Partitioning | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad table name {self.name!r}")
        names = [c.name for c in self.columns]
        if len(set(n.lower() for n in names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names")
        known = {n.lower() for n in names}
        for key in (self.primary_key, *(i.columns for i in self.indexes)):
            missing = [c for c in key if c.lower() not in known]
            if missing:
                raise ValueError(f"table {self.name}: key on unknown columns {missing}")
        if self.partitioning and self.partitioning.column.lower() not in known:
            raise ValueError(f"table {self.name}: partition column {self.partitioning.column} unknown")

    def column(self, name: str) -> Column:
        """Return the column called `name` (case-insensitive, like MariaDB). Raises KeyError."""
        for c in self.columns:
            if c.name.lower() == name.lower():
                return c
        raise KeyError(f"{self.name}.{name}")
