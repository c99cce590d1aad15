"""Service client against an in-process central: credentials, ping/pong, restore, stop, tasks → response /
responses relay, failover."""

from __future__ import annotations

import os

import trio

from tests.sensor.client.central import Central
from tests.sensor.client.stack import Stack, free_port, wait_for
from vmproto.sensor.client.connector import Connector, parse_destinations
from vmproto.sensor.client.errors import ClientError, ConnectFailed
from vmproto.sensor.client.tasks import TaskOutput


def test_parse_destinations() -> None:
    assert parse_destinations(" a.example ,b;; c/ignored ;[::1]") == ("a.example", "b", "c", "::1")
    assert parse_destinations(("x,y", "z")) == ("x", "y", "z")
    try:
        parse_destinations(" ; , ")
    except ClientError as exc:
        assert "empty" in str(exc)
    else:
        raise AssertionError("no error for an empty list")


async def test_credentials_ping_pong_and_restore() -> None:
    central = Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        await nursery.start(stack.run)
        await wait_for(lambda: central.pongs >= 3)
        first = central.service_creds[0]
        assert (first.sensor_id, first.sensor_version, first.compress_types) == (2, 2026004000, "gzip,zstd,lzo")
        assert first.check_ping_response and first.auto_parameters and not first.restore
        assert not first.use_encode_data and not first.remote_chart_server
        assert stack.session.parameters is not None and stack.session.concat_limit == 1000
        assert stack.session.store_compression == 3
        # the central drops the session: the sensor reconnects with restore
        central.kick_service()
        await wait_for(lambda: len(central.service_creds) >= 2)
        assert central.service_creds[1].restore
        nursery.cancel_scope.cancel()


async def test_refusals_are_retried() -> None:
    central = Central(ping_interval=0.05, refuse_service="bad password")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        nursery.start_soon(stack.service.run)
        await wait_for(lambda: len(stack.service.refusals) >= 3)
        assert stack.service.refusals[:3] == ["bad password"] * 3
        assert stack.session.service_sessions == 0 and not stack.session.accepted.is_set()
        nursery.cancel_scope.cancel()


async def test_unset_sensor_id_is_sent_as_zero() -> None:
    # A central with the default id_sensor (-1) refuses sensor id 0 (spec §7.3 check 5): the text proves the 0.
    central = Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, id_sensor=-1)
        nursery.start_soon(stack.service.run)
        await wait_for(lambda: len(stack.service.refusals) >= 2)
        assert set(stack.service.refusals) == {"client sensor_id must be different from receiver sensor_id"}
        nursery.cancel_scope.cancel()


async def test_stop_answers_next_ping() -> None:
    central = Central(ping_interval=0.02)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        done = trio.Event()

        async def service() -> None:
            await stack.service.run()
            done.set()

        nursery.start_soon(service)
        await wait_for(lambda: central.pongs >= 1)
        stack.service.stop()
        with trio.fail_after(2):
            await done.wait()
        assert stack.service.stopped_with_stop
        await wait_for(lambda: central.stops == 1)
        assert central.service_ends == ["stop"]
        nursery.cancel_scope.cancel()


async def test_stop_without_ping_closes_after_grace() -> None:
    central = Central(ping_interval=0.2)  # pings 200 ms apart; the grace period is 70 ms
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        done = trio.Event()

        async def service() -> None:
            await stack.service.run()
            done.set()

        nursery.start_soon(service)
        await wait_for(lambda: central.pongs >= 1, step=0.001)
        stack.service.stop()
        with trio.fail_after(2):
            await done.wait()
        assert not stack.service.stopped_with_stop
        await wait_for(lambda: central.service_ends == ["eof"])
        assert central.stops == 0
        nursery.cancel_scope.cancel()


async def test_task_response_relay() -> None:
    blob = os.urandom(200_003)

    async def runner(command: str, out: TaskOutput) -> None:
        if command.startswith("getfile"):
            for i in range(0, len(blob), 65536):
                await out.write(blob[i:i + 65536])
        elif command.startswith("file_exists"):
            await out.write(b"12345")
        else:
            await out.write(b"command not found\n")

    central = Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, runner=runner)
        await nursery.start(stack.run)
        await stack.session.accepted.wait()
        central.push_task("1713095857123456:1", b"getfile 2026-11-26/04/21/SIP/call.pcap")
        central.push_task("1713095857123456:2", b"file_exists 2026-11-26/04/21/SIP/call.pcap")
        central.push_task("1713095857123456:3", b"need_aes")
        with trio.fail_after(5):
            for n in (1, 2, 3):
                await central.response_done[f"1713095857123456:{n}"].wait()
        assert central.responses["1713095857123456:1"] == blob
        # file_exists goes over `responses` because the central sent enable_responses_sender (spec §11.3)
        assert central.responses_items == [("1713095857123456:2", b"12345")]
        assert central.responses["1713095857123456:3"] == b"command not found\n"
        await wait_for(lambda: central.pongs >= 2)  # pings kept being answered around the tasks
        nursery.cancel_scope.cancel()


async def test_builtin_getversion_and_empty_output() -> None:
    async def runner(command: str, out: TaskOutput) -> None:
        return None  # no output at all: no ciphertext, just the opening line and FIN

    central = Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        await nursery.start(stack.run)
        await stack.session.accepted.wait()
        central.push_task("1:1", b"getversion")
        with trio.fail_after(5):
            await central.response_done["1:1"].wait()
        assert central.responses["1:1"] == b"2026.04.0"
        stack.tasks.runner = runner
        central.push_task("1:2", b"flush_tar x")
        with trio.fail_after(5):
            await central.response_done["1:2"].wait()
        assert central.responses["1:2"] == b""
        nursery.cancel_scope.cancel()


async def test_failover_and_return_to_first() -> None:
    port = free_port()
    primary, backup = Central(ping_interval=0.05), Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: backup.serve(task_status=task_status, port=port, host="127.0.0.1"))
        stack = Stack(port, hosts=("127.0.0.2", "127.0.0.1"))
        await nursery.start(stack.run)
        await stack.session.accepted.wait()
        assert stack.session.service_host == "127.0.0.1"  # first destination down → second
        scope = trio.CancelScope()

        async def run_primary(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await primary.serve(task_status=task_status, port=port, host="127.0.0.2")

        await nursery.start(run_primary)
        backup.kick_service()  # the backup session ends; the next connect starts again at the first host
        await wait_for(lambda: primary.service_creds)
        assert primary.service_creds[0].restore
        await wait_for(lambda: stack.session.service_host == "127.0.0.2")
        nursery.cancel_scope.cancel()


async def test_connect_failure_message() -> None:
    port = free_port()
    connector = Connector(("127.0.0.1",), port, Stack(port).connector.timings)
    try:
        await connector.connect()
    except ConnectFailed as exc:
        assert "failed connection to all possible ips (127.0.0.1)" in str(exc)
    else:
        raise AssertionError("connected to a closed port")


async def test_sensor_config_query_gzip_then_end() -> None:
    from vmproto.sensor.client.query import load_sensor_config, sensor_config_sql

    assert sensor_config_sql(-1) == b"SELECT * FROM sensor_config WHERE id_sensor IS NULL"
    central = Central(ping_interval=0.05)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port)
        config = await load_sensor_config(stack.connector, stack.session)
        assert config == {"sipport": "5060,5080"}
        assert central.queries == [b"SELECT * FROM sensor_config WHERE id_sensor = 2"]
        assert stack.session.query_compression == 1  # gzip before the service handshake
        nursery.cancel_scope.cancel()
