"""Store channel end to end (spec §8): recorded sensor traffic lands as the recorded rows; ack after commit,
dedup of resends, queue-full back-pressure, client-time check, strict grammar."""

from __future__ import annotations

import json
import time

import pytest
import trio

from tests.conftest import REFERENCE, need_shared
from tests.server.client import credentials, handshake
from tests.server.conftest import db_session
from tests.server.db.transcripts import expected_rows
from vmproto.server.db.connection import quote_identifier
from vmproto.wire import events as ev
from vmproto.wire.compression import Compression, compress
from vmproto.wire.query import QueryClient
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage, decode_store_message

STORE_SCENARIOS = {"store_zstd": Compression.ZSTD, "store_gzip": Compression.GZIP, "store_nocomp": Compression.NONE}


def _records(scenario: str) -> list[dict]:
    path = need_shared(REFERENCE / "transcripts" / f"{scenario}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _store_messages(records: list[dict]) -> list[StoreMessage]:
    return [decode_store_message(r["text"].encode("utf-8")) for r in records
            if r["type_connection"] == "store" and r["dir"] == "c2s" and r.get("store")]


def _queries(records: list[dict]) -> list[tuple[bytes, bool]]:
    """(sql, recorded reply was an error) of every recorded query request, in order."""
    out: list[tuple[bytes, bool]] = []
    pending: bytes | None = None
    for r in sorted(records, key=lambda r: (r["conn"], r["seq"])):
        if r["type_connection"] != "query" or r["kind"] != "aes_block":
            continue
        if r["dir"] == "c2s" and r["text"] != "_END_":
            pending = r["text"].encode("utf-8")
        elif r["dir"] == "s2c" and pending is not None:
            out.append((pending, not r["text"].startswith('{"result":"OK"')))
            pending = None
    return out


async def _select(conn, table: str, columns: list[str]) -> list[dict]:
    cols = ", ".join(quote_identifier(c) for c in columns)
    result = await conn.execute(f"SELECT {cols} FROM {quote_identifier(table)}")
    return [{c: (v.decode() if v is not None else None) for c, v in zip(columns, row, strict=True)}
            for row in result.rows]


def _canon(rows: list[dict]) -> list[tuple]:
    return sorted(tuple(sorted(r.items())) for r in rows)


@pytest.mark.parametrize("scenario", sorted(STORE_SCENARIOS))
async def test_transcript_replay_gives_recorded_rows(start_server, connect, mariadb, scenario):
    records = _records(scenario)
    codec = STORE_SCENARIOS[scenario]
    server = await start_server(server_type_compress=int(codec))
    # The sensor's start-up queries first, as it runs them: each answer must be of the recorded kind.
    query = await connect(server.port, QueryClient(compression=codec))
    assert isinstance(await handshake(query, credentials()), ev.HandshakeOK)
    for sql, was_error in _queries(records):
        await query.send(ev.QueryRequest(sql))
        reply = await query.next_event()
        assert isinstance(reply, ev.QueryResponse)
        assert (reply.payload.startswith(b'{"result":"OK"') is False) == was_error, sql[:80]
    # Then the store messages, re-encrypted with the keys this connection negotiates.
    store = await connect(server.port, StoreClient(compression=codec))
    accepted = await handshake(store, credentials())
    assert accepted == ev.StoreAccepted(check_store=True, check_time=True)
    messages = _store_messages(records)
    assert messages
    for message in messages:
        await store.send(ev.StoreQueries(message))
        assert await store.next_event() == ev.StoreOK()
    assert server.stats.store_committed == len(messages)
    expected = expected_rows(need_shared(REFERENCE / "cdr" / f"{scenario}.tsv"))
    conn = await db_session(mariadb, server)
    try:
        ours = await _select(conn, "cdr", ["ID"])
        assert len(ours) == 1
        our_id, ref_id = ours[0]["ID"], expected["cdr"][0]["ID"]
        for table, rows in expected.items():
            got = await _select(conn, table, list(rows[0]))
            if table not in ("cdr_ua", "cdr_sip_response", "cdr_sip_request"):
                for row in got:  # the auto-increment cdr.ID is the one value allowed to differ
                    for id_col in ("ID", "cdr_ID"):
                        if table.startswith("cdr") and id_col in row:
                            assert row[id_col] == our_id
                            row[id_col] = ref_id
            assert _canon(got) == _canon(rows), table
    finally:
        await conn.aclose()


async def _store_client(connect, server, **kw) -> object:
    client = await connect(server.port, StoreClient(compression=Compression.GZIP))
    assert isinstance(await handshake(client, credentials(**kw)), ev.StoreAccepted)
    return client


async def _count(mariadb, server, table: str) -> int:
    conn = await db_session(mariadb, server)
    try:
        return int((await conn.execute(f"SELECT count(*) FROM {table}")).rows[0][0])
    finally:
        await conn.aclose()


async def test_resend_after_lost_ok_is_applied_once(server, connect, mariadb):
    message = StoreMessage(99, "2026-01-01 00:00:00", (b"INSERT INTO sensors (id_sensor, name) VALUES (501, 'x')",
                                                       b"INSERT INTO sensors (id_sensor, name) VALUES (502, 'y')"),
                           batched=True)
    first = await _store_client(connect, server)
    await first.send(ev.StoreQueries(message))
    assert await first.next_event() == ev.StoreOK()
    # The sensor lost that OK: it resends on a new connection with a fresh time part.
    second = await _store_client(connect, server)
    resent = StoreMessage(99, time.strftime("%Y-%m-%d %H:%M:%S"), message.queries, batched=True)
    await second.send(ev.StoreQueries(resent))
    assert await second.next_event() == ev.StoreOK()
    assert await _count(mariadb, server, "sensors WHERE id_sensor IN (501, 502)") == 2
    assert server.stats.store_committed == 1 and server.stats.store_duplicates == 1


async def test_queue_full_reply_and_check(start_server, connect):
    server = await start_server(server_sql_queue_limit=1)
    busy = await _store_client(connect, server)
    await busy.send(ev.StoreQueries(StoreMessage(99, None, (b"SELECT SLEEP(1.5)",))))
    await trio.sleep(0.3)  # the writer of id_main 99 is now executing: its queue is at the limit
    other = await _store_client(connect, server)
    await other.send(ev.StoreCheck())
    full = await other.next_event()
    assert isinstance(full, ev.StoreError) and full.error == "sql queue is full"
    assert full.keep_connect and full.quietly and full.next_attempt and 750000 <= full.usleep <= 997000
    assert full.usleep % 1000 == 0
    await other.send(ev.StoreQueries(StoreMessage(99, None, (b"SELECT 1",))))
    assert isinstance(await other.next_event(), ev.StoreError)
    assert await busy.next_event(timeout=10) == ev.StoreOK()
    await other.send(ev.StoreCheck())
    assert await other.next_event() == ev.StoreOK()
    assert server.stats.store_queue_full == 2


async def test_client_time_too_far_ahead_is_refused_and_closed(server, connect):
    client = await _store_client(connect, server)
    ahead = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 2 * 86400))
    await client.send(ev.StoreQueries(StoreMessage(99, ahead, (b"SELECT 1",))))
    reply = await client.next_event()
    assert reply == ev.StoreError("client time is too greater than server time", next_attempt=False)
    assert await client.next_event() == ev.ConnectionClosed("eof")


async def test_simple_connect_response(start_server, connect):
    server = await start_server(server_cp_store_simple_connect_response=True)
    client = await connect(server.port, StoreClient())
    assert await handshake(client, credentials()) == ev.StoreAccepted(False, False)


async def test_malformed_message_closes_without_reply(server, connect, mariadb):
    client = await _store_client(connect, server)
    machine = client.machine
    # No '|' separator: strict grammar (spec §8.6) — nothing applied, no reply, connection closed.
    await client.raw(machine._aes_block(compress(Compression.GZIP, b"INSERT INTO sensors (id_sensor) VALUES (9)")))
    assert await client.closed_by_peer()
    assert await _count(mariadb, server, "sensors") == 0


async def test_bad_password_exact_reply(server, connect):
    client = await connect(server.port, StoreClient())
    reply = await handshake(client, credentials(password="wrong"))
    assert reply == ev.Refuse("bad password")
    assert await client.closed_by_peer()


async def test_transient_failure_is_not_acknowledged(server, connect, mariadb):
    """spec §8.9 step 5: a message rolled back by a deadlock gets the queue-full reply (the sensor resends it),
    never `OK`; a permanent error in a unit drops that unit only and the message is acknowledged."""
    client = await _store_client(connect, server)
    deadlocked = StoreMessage(99, None, (b"INSERT INTO sensors (id_sensor, name) VALUES (601, 'lost?')",
                                         b"SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'sim'"),
                              batched=True)
    await client.send(ev.StoreQueries(deadlocked))
    reply = await client.next_event()
    assert isinstance(reply, ev.StoreError) and reply.error == "sql queue is full" and reply.next_attempt
    assert await _count(mariadb, server, "sensors WHERE id_sensor = 601") == 0
    assert server.stats.store_committed == 0 and server.stats.store_acked == 0
    partial = StoreMessage(99, None, (b"INSERT INTO sensors (id_sensor, name) VALUES (602, 'kept')",
                                      b"INSERT INTO no_such_table VALUES (1)"), batched=True)
    await client.send(ev.StoreQueries(partial))
    assert await client.next_event() == ev.StoreOK()
    assert await _count(mariadb, server, "sensors WHERE id_sensor = 602") == 1
    assert server.stats.store_committed == 1 and server.stats.store_failed == 1


async def test_messages_of_several_connections_commit_in_parallel(server, connect, mariadb):
    """One id_main, four connections, each message holding its transaction 0.4 s: the central's writer runs
    them on several sessions at once (well under 4 x 0.4 s), each connection still one message at a time."""
    clients = [await _store_client(connect, server) for _ in range(4)]
    replies = []

    async def one(i: int, client) -> None:
        message = StoreMessage(10, None, (b"INSERT INTO sensors (id_sensor, name) VALUES (%d, 'p')" % (700 + i),
                                          b"DO SLEEP(0.4)"), batched=True)
        await client.send(ev.StoreQueries(message))
        replies.append(await client.next_event())

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, client in enumerate(clients):
            nursery.start_soon(one, i, client)
    assert trio.current_time() - started < 1.4
    assert replies == [ev.StoreOK()] * 4
    assert await _count(mariadb, server, "sensors WHERE id_sensor BETWEEN 700 AND 703") == 4
