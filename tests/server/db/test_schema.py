"""Schema creation on a real MariaDB: from empty, idempotent restart, upgrades, partitions."""

from __future__ import annotations

import csv
import datetime as dt

from tests.conftest import REFERENCE, need_shared
from vmproto.server.db.connection import Connection
from vmproto.server.db.schema import ensure_partitions, ensure_schema, existing_columns
from vmproto.server.db.tables import TABLES, table

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


async def _partitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    result = await conn.execute(
        "SELECT partition_name, partition_description FROM information_schema.partitions "
        f"WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY partition_ordinal_position"
    )
    return [(n.decode(), d.decode()) for n, d in result.rows if n is not None]


async def test_partitions_created_and_extended(db):
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        assert await _partitions(conn, "cdr") == [
            ("p261126", "'2026-11-27'"), ("p261127", "'2026-11-28'"), ("p261128", "'2026-11-29'"),
        ]
        assert await _partitions(conn, "cdr_stat_values") == [("p2611", "'2026-12-01'"), ("p2612", "'2027-01-01'")]
        assert await _partitions(conn, "sensors") == []
        # Maintenance a few days later adds the missing days up to two ahead, and months across a year end.
        few = (table("cdr"), table("cdr_next"), table("cdr_stat_values"), table("sensors"))
        added = await ensure_partitions(conn, today=dt.date(2026, 12, 31), tables=few)
        assert "cdr.p261229" in added and "cdr.p270102" in added and "cdr_stat_values.p2701" in added
        names = [n for n, _ in await _partitions(conn, "cdr")]
        assert names[-1] == "p270102" and len(names) == len(set(names)) == 38
        assert await ensure_partitions(conn, today=dt.date(2026, 12, 31), tables=few) == []
        # A row of a covered day lands; the partition column decides where.
        await conn.execute("INSERT INTO cdr_next (cdr_ID, calldate) VALUES (1, '2027-01-02 23:59:59')")
    finally:
        await conn.aclose()


async def test_unpartitioned_when_cdr_partition_is_off(db):
    conn = await Connection.open(db)
    try:
        report = await ensure_schema(conn, partitioned=False, today=DAY)
        assert report.added_partitions == []
        assert await _partitions(conn, "cdr") == []
        assert await ensure_partitions(conn, today=DAY) == []
    finally:
        await conn.aclose()


async def test_restart_adds_missing_columns_in_place(db):
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        await conn.execute("ALTER TABLE cdr_next DROP COLUMN digest_username, DROP COLUMN spool_index")
        await conn.execute("DROP FUNCTION getIdOrInsertUA")
        await conn.execute("DROP TABLE cdr_dtmf")
        report = await ensure_schema(conn, today=DAY)
        assert report.added_columns == ["cdr_next.digest_username", "cdr_next.spool_index"]
        assert report.created_functions == ["getIdOrInsertUA"]
        assert report.created_tables == ["cdr_dtmf"]
        cols = await existing_columns(conn)
        assert cols["cdr_next"] == [c.name for c in table("cdr_next").columns]
    finally:
        await conn.aclose()


async def test_columns_match_the_reference_tables_tsv(db):
    """Every column the reference lists for the tables sensors write: type, NULL, default, key, extra."""
    tsv = need_shared(REFERENCE / "schema" / "tables.tsv")
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        result = await conn.execute(
            "SELECT table_name, column_name, column_type, is_nullable, column_default, column_key, extra "
            "FROM information_schema.columns WHERE table_schema = DATABASE()"
        )
        ours = {}
        for row in result.rows:
            t, c, typ, null, default, key, extra = (v.decode() if v is not None else None for v in row)
            ours[(t, c)] = (typ, null, "NULL" if default is None else default, key, extra)
        with tsv.open(newline="") as f:
            reference = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        assert len(reference) > 300
        for ref in reference:
            key = (ref["table"], ref["column"])
            assert key in ours, key
            want = (ref["type"], ref["nullable"], ref["default"] or "NULL", ref["key"], ref["extra"])
            assert ours[key] == want, key
    finally:
        await conn.aclose()


async def test_lookup_functions_insert_once_and_return_ids(db):
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        first = await conn.execute("SELECT getIdOrInsertUA('ua-1'), getIdOrInsertUA('ua-2'), getIdOrInsertUA('ua-1')")
        assert first.rows == [(b"1", b"2", b"1")]
        reason = await conn.execute(
            "SELECT getIdOrInsertREASON(1, 'Busy'), getIdOrInsertREASON(2, 'Busy'), getIdOrInsertREASON(1, 'Busy')"
        )
        assert reason.rows == [(b"1", b"2", b"1")]
        assert (await conn.execute("SELECT getIdOrInsertSIPRES(NULL)")).rows == [(None,)]
        assert (await conn.execute("SELECT count(*) FROM cdr_ua")).rows == [(b"2",)]
        assert (await conn.execute("SELECT getIdOrInsertCONTENTTYPE('text/plain')")).rows == [(b"1",)]
        assert (await conn.execute("SELECT getIdOrInsertSIPREQUEST('INVITE')")).rows == [(b"1",)]
    finally:
        await conn.aclose()
