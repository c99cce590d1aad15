"""Schema creation on a real MariaDB: from empty, idempotent restart, upgrades, partitions."""

from __future__ import annotations

import datetime as dt

from vmproto.server.db.connection import Connection
from vmproto.server.db.schema import ensure_schema, existing_columns
from vmproto.server.db.tables import TABLES

DAY = dt.date(2026, 11, 26)


async def test_create_from_empty_then_restart_is_a_no_op(db):
    conn = await Connection.open(db)
    try:
        report = await ensure_schema(conn, today=DAY)
        assert sorted(report.created_tables) == sorted(t.name for t in TABLES)
        assert len(report.created_functions) == 5
        cols = await existing_columns(conn)
        for t in TABLES:
            assert cols[t.name.lower()] == [c.name for c in t.columns]
        again = await ensure_schema(conn, today=DAY)
        assert not again.changed
    finally:
        await conn.aclose()
