"""Store execution on a real MariaDB: the recorded sensors' SQL yields the recorded rows; resends apply once."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from tests.conftest import REFERENCE, need_shared
from tests.server.db.transcripts import expected_rows, store_messages
from vmproto.server.db import store as store_module
from vmproto.server.db.connection import Connection, Pool, quote_identifier
from vmproto.server.db.ddl import create_table_sql
from vmproto.server.db.errors import ConnectionLostError, SqlError, StoreMessageError
from vmproto.server.db.schema import ensure_schema
from vmproto.server.db.store import (
    StoreMessage,
    StoreWriter,
    TransientStoreError,
    apply_store_message,
    is_transient,
    needs_procedure,
    split_statements,
)
from vmproto.server.db.tables import STORE_APPLIED_TABLE

DAY = dt.date(2026, 11, 26)
STORE_SCENARIOS = ["store_zstd", "store_gzip", "store_nocomp"]


async def _select(conn: Connection, table: str, columns: list[str]) -> list[dict[str, str | None]]:
    cols = ", ".join(quote_identifier(c) for c in columns)
    result = await conn.execute(f"SELECT {cols} FROM {quote_identifier(table)}")
    return [
        {c: (v.decode() if v is not None else None) for c, v in zip(columns, row, strict=True)}
        for row in result.rows
    ]


def _canon(rows: list[dict[str, str | None]]) -> list[tuple]:
    return sorted(tuple(sorted(r.items(), key=lambda kv: kv[0])) for r in rows)


@pytest.mark.parametrize("scenario", STORE_SCENARIOS)
async def test_transcript_sql_gives_recorded_rows(db, scenario):
    messages = store_messages(need_shared(REFERENCE / "transcripts" / f"{scenario}.jsonl"), id_sensor=2)
    expected = expected_rows(need_shared(REFERENCE / "cdr" / f"{scenario}.tsv"))
    assert messages[0].id_main == 10 and {m.id_main for m in messages[1:]} == {1010}
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        for message in messages:
            result = await apply_store_message(conn, message)
            assert result.applied
        resent = await apply_store_message(conn, messages[0])
        assert resent.procedure and not resent.applied
        # The reference's cdr.ID is its auto-increment after earlier runs on the same database; ours
        # starts at 1 on a fresh one. That ID (and the cdr_ID columns referring to it) is the only value
        # allowed to differ: map ours to the recorded one, and check the references agree.
        ref_id = expected["cdr"][0]["ID"]
        ours = await _select(conn, "cdr", ["ID"])
        assert len(ours) == 1
        our_id = ours[0]["ID"]
        assert set(expected) >= {"cdr", "cdr_next", "cdr_rtp", "cdr_sdp", "cdr_siphistory", "cdr_ua"}
        for table, rows in expected.items():
            columns = list(rows[0])
            got = await _select(conn, table, columns)
            for row in got:
                for id_col in ("ID", "cdr_ID") if table.startswith("cdr") and "lookup" not in table else ():
                    if id_col in row and table not in ("cdr_ua", "cdr_sip_response", "cdr_sip_request"):
                        assert row[id_col] == our_id
                        row[id_col] = ref_id
            assert _canon(got) == _canon(rows), table
    finally:
        await conn.aclose()


async def test_charts_cache_message_lands(db):
    messages = store_messages(need_shared(REFERENCE / "transcripts" / "store_zstd.jsonl"), id_sensor=2)
    charts = [m for m in messages if m.id_main == 1010][0]
    assert len(charts.queries) == 3 and not needs_procedure(charts.queries)
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        result = await apply_store_message(conn, charts)
        assert result.applied and not result.procedure
        for table in ("cdr_stat_values", "cdr_stat_values_dst", "cdr_problems_by_ip"):
            rows = (await conn.execute(f"SELECT count(*), min(sensor_id) FROM {table}")).rows
            assert rows == [(b"1", b"2")], table
    finally:
        await conn.aclose()


async def test_resend_is_applied_once_per_sensor(db):
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        msg = StoreMessage(id_sensor=7, id_main=99, queries=(b"INSERT INTO sensors (id_sensor, name) VALUES (70, 'a')",))
        assert (await apply_store_message(conn, msg)).applied
        assert not (await apply_store_message(conn, msg)).applied
        # Same SQL from another sensor is another message.
        other = StoreMessage(id_sensor=8, id_main=99, queries=msg.queries)
        result = await apply_store_message(conn, other)
        # It really ran again: the duplicate primary key in sensors is its (permanent) unit error.
        assert result.applied and [(i, errno) for i, errno, _ in result.failed] == [(0, 1062)]
        rows = (await conn.execute("SELECT count(*) FROM vmproto_store_applied")).rows
        assert rows == [(b"2",)]
    finally:
        await conn.aclose()


async def _count(conn: Connection, table: str) -> int:
    return int((await conn.execute(f"SELECT count(*) FROM {quote_identifier(table)}")).rows[0][0])


@pytest.mark.parametrize("procedural", [False, True], ids=["plain", "procedure"])
async def test_permanent_error_drops_only_its_unit(db, procedural):
    """spec §8.9 step 3: the failing unit is rolled back alone; the others commit with the dedup record."""
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        # A second statement in a unit forces the generated-procedure path.
        extra = b"; SET @vmp_t = 1" if procedural else b""
        units = (
            b"INSERT INTO sensors (id_sensor, name) VALUES (1, 'one')" + extra,
            b"INSERT INTO sensors (id_sensor, name) VALUES (2, 'two')" + (b"; INSERT INTO no_such_table VALUES (1)"
                                                                          if procedural else b"") ,
            b"INSERT INTO sensors (id_sensor, name) VALUES (3, 'three')" + extra,
        )
        if not procedural:
            units = (units[0], b"INSERT INTO no_such_table VALUES (1)", units[2])
        msg = StoreMessage(id_sensor=2, id_main=10, queries=units)
        assert needs_procedure(msg.queries) is procedural
        result = await apply_store_message(conn, msg)
        assert result.applied and result.procedure is procedural
        assert [(i, errno) for i, errno, _text in result.failed] == [(1, 1146)]
        assert "no_such_table" in result.failed[0][2]
        names = sorted(r[0] for r in (await conn.execute("SELECT name FROM sensors")).rows)
        assert names == [b"one", b"three"]  # unit 1 left nothing behind, not even its first statement
        assert await _count(conn, "vmproto_store_applied") == 1
        assert not (await apply_store_message(conn, msg)).applied  # a resend is still applied once
    finally:
        await conn.aclose()


async def test_transient_error_rolls_back_the_whole_message(db):
    """spec §8.9 step 5: a deadlock (or lock wait timeout) fails the message so the sensor resends it."""
    conn = await Connection.open(db)
    try:
        await ensure_schema(conn, today=DAY)
        msg = StoreMessage(id_sensor=2, id_main=10, queries=(
            b"INSERT INTO sensors (id_sensor, name) VALUES (1, 'one')",
            b"SET @vmp_t = 1; SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'simulated deadlock'",
        ))
        with pytest.raises(SqlError) as info:
            await apply_store_message(conn, msg)
        assert info.value.errno == 1213
        assert await _count(conn, "sensors") == 0
        assert await _count(conn, "vmproto_store_applied") == 0  # no digest: the resend will run
    finally:
        await conn.aclose()


async def test_writer_commits_before_returning_and_reports_queue(db):
    conn = await Connection.open(db)
    await ensure_schema(conn, today=DAY)
    pool = Pool(db, size=2)
    writer = StoreWriter(pool, 99, queue_limit=3)
    results = []

    async def one(i: int) -> None:
        msg = StoreMessage(2, 99, (b"INSERT INTO system (type, content) VALUES ('t', '%d')" % i,))
        results.append(await writer.submit(msg))

    try:
        async with trio.open_nursery() as nursery:
            # The writer gets its own cancel scope so stopping it leaves the submitters running.
            writer_scope = trio.CancelScope()

            async def run_writer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with writer_scope:
                    await writer.run(task_status=task_status)

            await nursery.start(run_writer)
            # Hold the table so the writer cannot finish its first message: all five stay queued.
            await conn.execute("LOCK TABLES system WRITE")
            async with trio.open_nursery() as inner:
                for i in range(5):
                    inner.start_soon(one, i)
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                assert writer.queue_length == 5 and writer.is_full
                assert results == []
                await conn.execute("UNLOCK TABLES")
            assert writer.queue_length == 0 and not writer.is_full
            assert len(results) == 5 and all(r.applied for r in results)
            # Committed: visible from another session.
            got = await conn.execute("SELECT count(*) FROM system WHERE type = 't'")
            assert got.rows == [(b"5",)]
            with pytest.raises(StoreMessageError):
                await writer.submit(StoreMessage(2, 10, (b"SELECT 1",)))
            # Messages queued behind a stopped writer fail instead of hanging.
            await conn.execute("LOCK TABLES system WRITE")
            failures = []

            async def doomed(i: int) -> None:
                with pytest.raises(ConnectionLostError):
                    await one(100 + i)
                failures.append(i)

            async with trio.open_nursery() as inner:
                inner.start_soon(doomed, 0)
                inner.start_soon(doomed, 1)
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                writer_scope.cancel()
            await conn.execute("UNLOCK TABLES")
            assert sorted(failures) == [0, 1]
            with pytest.raises(ConnectionLostError):
                await one(200)
        assert writer.queue_length == 0
    finally:
        await pool.aclose()
        await conn.aclose()


def test_split_statements_respects_quotes_and_comments():
    sql = b"set @a = 'x;y\\';z'; INSERT INTO t VALUES (\"a;b\", `c;d`) -- c;\n; /* ; */ SELECT 1;  "
    assert split_statements(sql) == [
        b"set @a = 'x;y\\';z'",
        b"INSERT INTO t VALUES (\"a;b\", `c;d`) -- c;",
        b"/* ; */ SELECT 1",
    ]
    with pytest.raises(StoreMessageError):
        split_statements(b"SELECT 'open")
    assert needs_procedure([b"INSERT INTO t VALUES (1);"]) is False
    assert needs_procedure([b"if row_count() > 0 then select 1; end if"]) is True


def test_empty_message_is_rejected():
    with pytest.raises(StoreMessageError):
        StoreMessage(2, 10, (b"  ",))


async def test_concurrent_duplicates_apply_once(db):
    setup = await Connection.open(db)
    await ensure_schema(setup, today=DAY)
    a, b = await Connection.open(db), await Connection.open(db)
    msg = StoreMessage(3, 10, (b"set @x = getIdOrInsertUA('dup'); INSERT INTO system (type, content) VALUES ('d', @x)",))
    outcomes = []

    async def apply(conn: Connection) -> None:
        outcomes.append((await apply_store_message(conn, msg)).applied)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(apply, a)
            nursery.start_soon(apply, b)
        assert sorted(outcomes) == [False, True]
        assert (await setup.execute("SELECT count(*) FROM system WHERE type = 'd'")).rows == [(b"1",)]
    finally:
        for conn in (a, b, setup):
            await conn.aclose()


# --- the batched fast path, its fallback, and the parallel writer ----------------------------------------------

async def _minimal_schema(conn: Connection) -> None:
    """Only the tables these tests touch (ensure_schema takes seconds): the dedup table and two plain ones."""
    await conn.execute(create_table_sql(STORE_APPLIED_TABLE))
    await conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB")
    # Aria is not transactional: rows written there survive a rollback, so a test can count attempts.
    await conn.execute("CREATE TABLE tries (n INT) ENGINE=Aria")


async def _ids(conn: Connection) -> list[int]:
    return [int(r[0]) for r in (await conn.execute("SELECT id FROM t ORDER BY id")).rows]


async def test_unit_that_does_not_parse_drops_only_itself(db):
    """A unit the server cannot parse fails the whole compound statement before anything runs; the message
    is run again unit by unit, and only that unit is dropped (spec §8.9 step 3)."""
    conn = await Connection.open(db)
    try:
        await _minimal_schema(conn)
        msg = StoreMessage(2, 10, (
            b"INSERT INTO t VALUES (1, 'a');\nif row_count() > 0 then\nINSERT INTO t VALUES (10, 'a2');\nend if",
            b"INSRT INTO t VALUES (2, 'b')",
            b"INSERT INTO t VALUES (3, 'c')",
            b"INSERT INTO t VALUES (1, 'dup')",  # a runtime error: caught by the unit's own handler
        ))
        result = await apply_store_message(conn, msg)
        assert result.applied and result.procedure
        assert [(i, errno) for i, errno, _ in result.failed] == [(1, 1064), (3, 1062)]
        assert await _ids(conn) == [1, 3, 10]
        assert await _count(conn, "vmproto_store_applied") == 1
        assert not (await apply_store_message(conn, msg)).applied
        assert await _ids(conn) == [1, 3, 10]
    finally:
        await conn.aclose()


async def test_message_over_several_round_trips(db, monkeypatch):
    """A message bigger than ROUND_TRIP_BYTES is sent as several compound statements, still one transaction:
    a permanent error in a later chunk drops its unit only, a transient one undoes the earlier chunks too."""
    monkeypatch.setattr(store_module, "ROUND_TRIP_BYTES", 600)
    conn = await Connection.open(db)
    try:
        await _minimal_schema(conn)
        units = tuple(b"INSERT INTO t VALUES (%d, '%s')" % (i, b"x" * 30) for i in range(1, 9))
        bad = units[:6] + (b"INSERT INTO no_such_table VALUES (1)",) + units[6:]
        result = await apply_store_message(conn, StoreMessage(2, 10, bad))
        assert result.applied and [(i, e) for i, e, _ in result.failed] == [(6, 1146)]
        assert await _ids(conn) == list(range(1, 9))
        await conn.execute("DELETE FROM t")
        deadlock = units + (b"SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'simulated'",)
        with pytest.raises(TransientStoreError) as info:
            await apply_store_message(conn, StoreMessage(2, 10, deadlock))
        assert info.value.errno == 1213 and is_transient(info.value)
        assert await _ids(conn) == []
        assert await _count(conn, "vmproto_store_applied") == 1  # only the first message's record
    finally:
        await conn.aclose()


async def test_failure_text_is_reported_exactly(db):
    """The failure list is length-prefixed: an error text with newlines or record-like parts stays one entry."""
    conn = await Connection.open(db)
    try:
        await _minimal_schema(conn)
        text = "bad\\n2 1062 5:fake\\nend"
        msg = StoreMessage(2, 10, (
            b"INSERT INTO t VALUES (1, 'a')",
            b"SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644, MESSAGE_TEXT = '" + text.encode() + b"'",
        ))
        result = await apply_store_message(conn, msg)
        assert result.failed == ((1, 1644, "bad\n2 1062 5:fake\nend"),)
        assert await _ids(conn) == [1]
    finally:
        await conn.aclose()


async def test_oversized_unit_is_dropped_without_breaking_the_session(db, monkeypatch):
    conn = await Connection.open(db)
    try:
        await _minimal_schema(conn)
        conn._variables["max_allowed_packet"] = b"4200"  # as if the server's limit were tiny
        big = b"INSERT INTO t VALUES (2, '%s')" % (b"y" * 4200)
        result = await apply_store_message(conn, StoreMessage(2, 10, (b"INSERT INTO t VALUES (1, 'a')", big)))
        assert [(i, e) for i, e, _ in result.failed] == [(1, 1153)]
        assert await _ids(conn) == [1] and not conn.broken
    finally:
        await conn.aclose()


async def test_pool_lends_sessions_in_the_mode_asked(db):
    """Multi-statement mode stays with the store path: a plain borrower gets single-statement semantics."""
    pool = Pool(db, size=1)
    try:
        async with pool.connection(multi_statements=True) as conn:
            batch = await conn.execute_batch(b"SELECT 1; SELECT 2")
            assert [r.rows for r in batch.results] == [[(b"1",)], [(b"2",)]] and batch.error is None
            first = conn
        async with pool.connection() as conn:
            assert conn is first and not conn.multi_statements
            with pytest.raises(SqlError):
                await conn.execute("SELECT 1; SELECT 2")
            with pytest.raises(ValueError):
                await conn.execute_batch(b"SELECT 1")
        async with pool.connection(multi_statements=True) as conn:
            batch = await conn.execute_batch(b"SELECT 1; SELECT * FROM nope; SELECT 3")
            assert len(batch.results) == 1 and isinstance(batch.error, SqlError) and batch.error.errno == 1146
            assert (await conn.execute_batch(b"SELECT 4")).results[0].rows == [(b"4",)]  # session still usable
    finally:
        await pool.aclose()


async def test_writer_sessions_overlap_and_resends_apply_once(db):
    """Several sessions per id_main: messages run in parallel (each one sleeps 0.3 s: four in ~0.3 s, not
    1.2 s), and a message submitted twice at the same time is applied once."""
    conn = await Connection.open(db)
    await _minimal_schema(conn)
    pool = Pool(db, size=4)
    writer = StoreWriter(pool, 10, sessions=4)
    assert StoreWriter(Pool(db, size=16), 10).sessions == 4 and StoreWriter(Pool(db, size=2), 10).sessions == 1
    results: list[bool] = []

    async def submit(i: int) -> None:
        msg = StoreMessage(2, 10, (b"INSERT INTO t VALUES (%d, 'p'); DO SLEEP(0.3)" % i,))
        results.append((await writer.submit(msg)).applied)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            started = trio.current_time()
            async with trio.open_nursery() as inner:
                for i in (1, 2, 1, 2):
                    inner.start_soon(submit, i)
            assert trio.current_time() - started < 0.9
            nursery.cancel_scope.cancel()
        assert sorted(results) == [False, False, True, True]
        assert writer.applied == 2 and writer.duplicates == 2
        assert await _ids(conn) == [1, 2]
    finally:
        await pool.aclose()
        await conn.aclose()


async def test_writer_runs_a_deadlocked_message_again(db):
    """A deadlock rolls the whole message back; the writer runs it again itself instead of bothering the
    sensor, and gives up (raising a transient error) only after a few attempts."""
    conn = await Connection.open(db)
    await _minimal_schema(conn)
    pool = Pool(db, size=2)
    writer = StoreWriter(pool, 10)
    flaky = StoreMessage(2, 10, (
        b"INSERT INTO tries VALUES (1);\n"
        b"IF (SELECT count(*) FROM tries) < 2 THEN SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213; END IF;\n"
        b"INSERT INTO t VALUES (5, 'after retry')",))
    hopeless = StoreMessage(2, 10, (b"INSERT INTO t VALUES (6, 'never')",
                                    b"SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213",))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            assert (await writer.submit(flaky)).applied
            assert writer.retried == 1 and await _ids(conn) == [5]
            with pytest.raises(SqlError) as info:
                await writer.submit(hopeless)
            assert info.value.errno == 1213 and is_transient(info.value)
            assert await _ids(conn) == [5] and writer.retried == 4
            nursery.cancel_scope.cancel()
    finally:
        await pool.aclose()
        await conn.aclose()


def test_transient_classification():
    assert is_transient(SqlError("deadlock", 1213)) and is_transient(ConnectionLostError("gone", 2013))
    assert is_transient(TransientStoreError("COMMIT failed: x", 1180))
    assert not is_transient(SqlError("no such table", 1146))
    assert needs_procedure([b"INSERT INTO t VALUES (';');  ;\n"]) is False
    assert needs_procedure([b"INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"]) is True
