"""Remote query execution: the reference sensors' start-up queries give the recorded columns, types and
(for schema queries) rows on our schema; errors and the "procedure already exists" clean-up."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.conftest import REFERENCE, need_shared
from vmproto.server.db.connection import Connection
from vmproto.server.db.query import run_query
from vmproto.server.db.schema import ensure_schema
from vmproto.server.db.sensor_config import load_sensor_config
from vmproto.wire.query_result import QueryError, QueryResult, decode_result

DAY = dt.date(2026, 11, 26)


def recorded_queries(transcripts: Path) -> dict[str, QueryResult]:
    """Each distinct query of every transcript that the reference answered with rows, and that answer."""
    answers: dict[str, QueryResult] = {}
    for path in sorted(transcripts.glob("*.jsonl")):
        pending: dict[int, str] = {}
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["type_connection"] != "query" or rec["kind"] != "aes_block" or rec.get("text") is None:
                continue
            if rec["dir"] == "c2s":
                pending[rec["conn"]] = rec["text"]
                continue
            query = pending.pop(rec["conn"], None)
            if query is not None and '"data"' in rec["text"]:
                result = decode_result(rec["text"].encode())
                assert isinstance(result, QueryResult)
                answers.setdefault(query, result)
    return answers


async def test_startup_queries_match_the_recording(db):
    recorded = recorded_queries(need_shared(REFERENCE / "transcripts"))
    assert len(recorded) > 60
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        schema_queries = 0
        for query, want in recorded.items():
            got = await run_query(conn, query.replace("voipmonitor", db.database).encode())
            assert isinstance(got, QueryResult), (query, got)
            want_columns = tuple((n.replace("voipmonitor", db.database), t) for n, t in want.columns)
            assert got.columns == want_columns, query
            if query.lower().startswith(("show columns", "show tables")):
                # The schema itself: every column's type, nullability, key, default and extra.
                assert got.rows == want.rows, query
                schema_queries += 1
        assert schema_queries > 50
    finally:
        await conn.aclose()


async def test_errors_carry_errno_and_retry(db):
    conn = await Connection.open(db)
    try:
        got = await run_query(conn, b"SELEC 1")
        assert isinstance(got, QueryError) and got.code == 1064 and got.retry == 0
        got = await run_query(conn, b"SELECT * FROM missing_table")
        assert isinstance(got, QueryError) and got.code == 1146 and got.retry == 1
        assert "missing_table" in got.message
        # The session is still usable after errors.
        ok = await run_query(conn, b"SELECT NULL AS n, 'a\\nb' AS s, 1.50 AS d")
        assert ok == QueryResult(columns=(("n", 6), ("s", 253), ("d", 246)), rows=((None, b"a\nb", b"1.50"),))
        empty = await run_query(conn, b"DO 1")
        assert empty == QueryResult(columns=(), rows=())
    finally:
        await conn.aclose()


async def test_procedure_already_exists_is_dropped_after_the_error(db):
    conn = await Connection.open(db)
    try:
        create = b"create procedure p_dup() begin select 1; end"
        assert await run_query(conn, create) == QueryResult(columns=(), rows=())
        got = await run_query(conn, create)
        assert isinstance(got, QueryError) and got.code == 1304
        # The reference dropped it, so the sensor's next attempt succeeds.
        assert await run_query(conn, create) == QueryResult(columns=(), rows=())
        called = await run_query(conn, b"call p_dup()")
        assert called == QueryResult(columns=(("1", 3),), rows=((b"1",),))
    finally:
        await conn.aclose()


async def test_sensor_config_options(db):
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        assert await load_sensor_config(conn, 2) == {}
        await conn.execute("ALTER TABLE sensor_config ADD COLUMN `sipport` text, ADD COLUMN `savertp` text")
        await conn.execute("INSERT INTO sensor_config (id_sensor, sipport, savertp) VALUES (2, '5060,5080', NULL)")
        await conn.execute("INSERT INTO sensor_config (id_sensor, sipport) VALUES (NULL, '5061')")
        assert await load_sensor_config(conn, 2) == {"sipport": "5060,5080"}
        assert await load_sensor_config(conn, None) == {"sipport": "5061"}
        assert await load_sensor_config(conn, 0) == {"sipport": "5061"}
        with pytest.raises(TypeError):
            await load_sensor_config(conn, "2")  # type: ignore[arg-type]
    finally:
        await conn.aclose()
