"""Store client against an in-process central over loopback: batching, T part, queue full + check, lost OK,
central outage and sensor restart with the journal."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.sensor.client.central import Central
from tests.sensor.client.stack import Stack, free_port, wait_for
from vmproto.sensor.client.store import encode_body, message_for
from vmproto.wire.store_msg import encode_store_message


def _units(central: Central) -> list[bytes]:
    return [q for rec in central.store for q in rec.queries]


def test_body_roundtrip_is_byte_exact() -> None:
    for units, batched in (([b"INSERT 1;\n"], False), ([b"a", b"b\nc"], True), ([b"L1:x"], False),
                           ([b"T2026-01-01 00:00:00|x"], False)):
        body = encode_body(units, batched)
        for t in (None, "2026-11-26 04:21:36"):
            text = encode_store_message(message_for(10, body, t))
            prefix = b"10|" + (b"T" + t.encode() + b"|" if t else b"")
            assert text == prefix + body


async def test_store_flow_batches_and_time(tmp_path: Path) -> None:
    central = Central(ping_interval=0.1, concat_limit=3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        await stack.session.accepted.wait()
        sent = [f"INSERT INTO cdr VALUES ({i});\n".encode() for i in range(10)]
        for unit in sent:
            await stack.store.submit(10, unit)
        await stack.store.submit(1010, b"INSERT IGNORE INTO cdr_stat_values VALUES (1);\n")
        await wait_for(lambda: stack.store.unacked == 0)
        assert [q for r in central.store if r.id_main == 10 for q in r.queries] == sent
        assert all(len(r.queries) <= 3 for r in central.store)
        assert any(r.batched and len(r.queries) > 1 for r in central.store)
        assert all(r.client_time is not None and len(r.client_time) == 19 for r in central.store)
        # one lazy store connection per id_main (README item 10)
        assert central.connections["store"] == 2
        assert len({r.conn for r in central.store if r.id_main == 10}) == 1
        assert central.checks == 0
        nursery.cancel_scope.cancel()


async def test_queue_full_then_check(tmp_path: Path) -> None:
    central = Central(ping_interval=0.1, store_queue_full=2, store_check_full=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        await stack.store.submit(10, b"one;\n")
        await wait_for(lambda: stack.store.unacked == 0)
        assert _units(central) == [b"one;\n"]
        # msg→full, check→full, check→OK, msg→full, check→OK, msg→OK: a `check` precedes every resend
        assert central.checks == 3
        assert stack.store.stats.queue_full_replies == 3
        assert central.connections["store"] == 1  # keep_connect
        nursery.cancel_scope.cancel()


async def test_lost_ok_resends_identical_body(tmp_path: Path) -> None:
    central = Central(ping_interval=0.1, store_drop_before_reply=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        await stack.store.submit(10, b"INSERT x;\n")
        await wait_for(lambda: stack.store.unacked == 0)
        # the reference central applies the resend again (spec §8.10.2); the body is byte-identical for dedup
        assert _units(central) == [b"INSERT x;\n", b"INSERT x;\n"]
        assert central.connections["store"] == 2
        nursery.cancel_scope.cancel()


async def test_restart_replays_journal(tmp_path: Path) -> None:
    port = free_port()
    # 1. the central is down: statements are journaled (singles: no concat limit known yet)
    async with trio.open_nursery() as nursery:
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        for i in range(5):
            await stack.store.submit(10, b"INSERT %d;\n" % i)
        await wait_for(lambda: len(stack.store.journal) == 5)
        nursery.cancel_scope.cancel()
    # 2. a new process with the same journal, the central is up: everything arrives, in order
    central = Central(ping_interval=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: central.serve(task_status=task_status, port=port))
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        assert stack.store.stats.replayed == 5
        await wait_for(lambda: stack.store.unacked == 0)
        assert _units(central) == [b"INSERT %d;\n" % i for i in range(5)]
        nursery.cancel_scope.cancel()


async def test_central_outage_mid_stream(tmp_path: Path) -> None:
    port = free_port()
    first = Central(ping_interval=0.1)
    second = Central(ping_interval=0.1)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run_first(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await first.serve(task_status=task_status, port=port)

        await nursery.start(run_first)
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        for i in range(3):
            await stack.store.submit(10, b"A%d;\n" % i)
        await wait_for(lambda: stack.store.unacked == 0)
        scope.cancel()  # the central goes away (its connections are closed)
        for i in range(3):
            await stack.store.submit(10, b"B%d;\n" % i)
        await trio.sleep(0.2)
        assert stack.store.unacked > 0
        await nursery.start(lambda task_status: second.serve(task_status=task_status, port=port))
        await wait_for(lambda: stack.store.unacked == 0)
        assert _units(first) == [b"A0;\n", b"A1;\n", b"A2;\n"]
        assert _units(second) == [b"B0;\n", b"B1;\n", b"B2;\n"]
        assert stack.session.service_sessions >= 2
        nursery.cancel_scope.cancel()


async def test_wait_idle_does_not_return_while_a_unit_is_being_journaled(tmp_path):
    """Regression: units left `_pending` before the journal append finished, so `unacked` read 0 in between
    and a sensor at the end of a replay reported undelivered CDRs as committed."""
    from vmproto.sensor.client.connector import Connector
    from vmproto.sensor.client.journal import Journal
    from vmproto.sensor.client.session import SessionState
    from vmproto.sensor.client.store import StoreClient

    journal = Journal(tmp_path / "j")
    slow_append = journal.append

    def append(messages):  # runs in a worker thread: widen the window between _pending and the journal
        import time

        time.sleep(0.3)
        return slow_append(messages)

    journal.append = append
    # Nothing listens on this port: the unit can never be acknowledged.
    client = StoreClient(Connector(("127.0.0.1",), 9), SessionState(), journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.submit(10, b"INSERT INTO t VALUES (1)")
        with trio.move_on_after(0.5) as scope:
            await client.wait_idle()
        assert scope.cancelled_caught, "wait_idle returned with an unacknowledged unit"
        assert client.unacked == 1
        nursery.cancel_scope.cancel()


async def test_full_journal_disk_holds_cdrs_until_it_can_write(tmp_path: Path, monkeypatch) -> None:
    """Regression (chaos disk-full): ENOSPC on the journal killed the sensor and lost every CDR. Now the store
    client waits (spec §8.10.1 back-pressure), then journals and delivers everything; a failed ACK write does not
    keep a delivered message alive either."""
    import errno

    from vmproto.sensor.client.errors import JournalError

    central = Central(ping_interval=0.1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, tmp_path)
        await nursery.start(stack.run)
        await stack.session.accepted.wait()
        journal = stack.store.journal
        real_append, real_write, real_ack = journal.append, journal._write, journal.ack
        refusals = {"append": 3}
        acking = []

        def full_disk_append(messages, now=None):
            if refusals["append"] > 0:
                refusals["append"] -= 1
                raise JournalError("journal append failed: No space left on device")
            return real_append(messages, now)

        def full_disk_write(data):
            if acking:  # the disk is still full for the ACK records
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(data)

        def ack(seq):
            acking.append(seq)
            try:
                return real_ack(seq)
            finally:
                acking.pop()

        monkeypatch.setattr(journal, "append", full_disk_append)
        monkeypatch.setattr(journal, "_write", full_disk_write)
        monkeypatch.setattr(journal, "ack", ack)
        sent = [f"INSERT INTO cdr VALUES ({i});\n".encode() for i in range(5)]
        for unit in sent:
            await stack.store.submit(10, unit)
        # Three refusals: the retry waits 1 + 2 + 4 s before the append goes through.
        await wait_for(lambda: stack.store.unacked == 0, timeout=30)
        assert [q for r in central.store for q in r.queries] == sent
        assert stack.store.stats.journal_write_failures == 3
        assert journal.finish_write_failures >= 1
        nursery.cancel_scope.cancel()
