"""Service, GUI relay, query, keycheck and hostile input over loopback (spec §7, §10-§12, §17)."""

from __future__ import annotations

import time

import trio

from tests.server.client import credentials, eventually, handshake, service_credentials
from vmproto.wire import events as ev
from vmproto.wire.framing import encode_block
from vmproto.wire.gui import GuiCommandClient, ManagerCommandClient
from vmproto.wire.keycheck import KeycheckClient
from vmproto.wire.query import QueryClient
from vmproto.wire.response import ResponseClient, ResponsesClient
from vmproto.wire.service import ServiceClient
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage


async def _service(connect, server, **kw):
    client = await connect(server.port, ServiceClient())
    creds = service_credentials(**kw)
    reply = await handshake(client, creds)
    return client, creds, reply


async def test_service_parameters_ping_and_registration(server, connect):
    client, _creds, reply = await _service(connect, server)
    assert reply == ev.ServiceAccepted(ev.ServiceParameters(mysql_concat_limit=1000, type_compress=3,
                                                            type_compress_query=3, type_compress_store=3))
    assert await client.next_event() == ev.Ping()  # the first ping comes at once
    await client.send(ev.Pong())
    assert server.registry.find_service("2") is not None
    manager = await connect(server.port, ManagerCommandClient())
    await manager.send(ev.OpenConnection("manager_command", {"command": "active"}))
    data = await manager.read_all()
    assert data.startswith(b'{"count":1,"services":[{"ip":"127.0.0.1","port":') and data.endswith(b',"sensor_id":2}]}')


async def test_service_refusals_exact_replies(start_server, connect):
    server = await start_server(mysql_enable_set_id=True)
    old = await connect(server.port, ServiceClient())
    creds = service_credentials()
    await old.send(ev.OpenConnection("service"))
    await old.next_event()
    await old.send(ev.ServiceCredentials(**{**{f: getattr(creds, f) for f in creds.__slots__},
                                            "sensor_version": 23006000}))
    assert await old.next_event() == ev.Refuse("need upgrade sensor!!!")
    _c, _cr, reply = await _service(connect, server, password="nope")
    assert reply == ev.Refuse("bad password")
    _c, _cr, reply = await _service(connect, server, sensor_id=0)
    assert reply == ev.Refuse("client sensor_id must be different from receiver sensor_id")


async def test_duplicate_sensor_refused_after_5s_and_restore_replaces(server, connect):
    first, _creds, _reply = await _service(connect, server)
    started = time.monotonic()
    _dup, _c, reply = await _service(connect, server)
    assert reply == ev.Refuse("client with sensor_id 2 is already connected, refusing connection")
    assert 4.9 <= time.monotonic() - started < 8
    restored, _c, reply = await _service(connect, server, restore=True)
    assert isinstance(reply, ev.ServiceAccepted)
    assert await restored.next_event() == ev.Ping()
    # The old connection was told to end; the registry keeps the new one.
    events = []
    while not events or not isinstance(events[-1], ev.ConnectionClosed):
        events.append(await first.next_event())
    assert server.registry.find_service("2").aes_ckey == _c.aes_ckey


async def test_gui_command_relayed_through_response_and_responses(server, connect):
    service, creds, _ = await _service(connect, server)
    assert await service.next_event() == ev.Ping()
    await service.send(ev.Pong())
    gui = await connect(server.port, GuiCommandClient())
    await gui.send(ev.OpenConnection("gui_command", {"sensor_id": 2, "command": "getversion"}))
    task = await service.next_event()
    assert isinstance(task, ev.Task) and task.command == b"getversion"
    resp = await connect(server.port, ResponseClient(aes_ckey=creds.aes_ckey, aes_ivec=creds.aes_ivec))
    await resp.send(ev.OpenConnection("response", {"gui_task_id": task.task_id}))
    await resp.send(ev.ResponseData(b"2026.04.0\n" * 500))
    await resp.send(ev.ResponseEnd())
    await resp.close()
    assert await gui.read_all() == b"2026.04.0\n" * 500
    # responses: a file_exists answer goes back raw.
    gui2 = await connect(server.port, GuiCommandClient())
    await gui2.send(ev.OpenConnection("gui_command", {"sensor_id": "2", "command": "file_exists x"}))
    task2 = await service.next_event()
    while not isinstance(task2, ev.Task):
        await service.send(ev.Pong())
        task2 = await service.next_event()
    responses = await connect(server.port, ResponsesClient())
    assert await handshake(responses, credentials()) == ev.HandshakeOK()
    await responses.send(ev.ResponseItem("1:999", b"x"))
    assert await responses.next_event() == ev.ResponseReply("unknown gui task id")
    await responses.send(ev.ResponseItem(task2.task_id, b"1"))
    assert await responses.next_event() == ev.ResponseReply("OK")
    assert await gui2.read_all() == b"1"


async def test_gui_command_without_service(server, connect):
    gui = await connect(server.port, GuiCommandClient())
    await gui.send(ev.OpenConnection("gui_command", {"sensor_id": 9, "command": "getversion"}))
    assert await gui.read_all() == b"missing sniffer service - connect sensor?"


async def test_query_results_and_errors(server, connect):
    client = await connect(server.port, QueryClient())
    assert await handshake(client, credentials()) == ev.HandshakeOK()
    await client.send(ev.QueryRequest(b"SELECT 1 AS one, NULL AS n, 'a,b' AS t"))
    reply = await client.next_event()
    assert reply.payload == b'{"result":"OK","data_rows":1,"data":[["one:3","n:6","t:253"],["1",null,"a,b"]]}'
    await client.send(ev.QueryRequest(b"SELEC nonsense"))
    error = (await client.next_event()).payload
    assert error.startswith(b'{"result":"1064|0|You have an error in your SQL syntax')
    await client.send(ev.QueryRequest(b"SELECT 2 AS two", csv=True))
    assert (await client.next_event()).payload == b"CSV\ntwo:3\n2"
    await client.send(ev.End())
    assert await client.closed_by_peer()


async def test_keycheck_undefined(server, connect):
    client = await connect(server.port, KeycheckClient())
    assert await handshake(client, credentials()) == ev.HandshakeOK()
    await client.send(ev.KeycheckRequest(b"input"))
    assert await client.next_event() == ev.KeycheckReply(b"error: undefined keycheck on server side")


async def test_garbage_is_dropped_and_others_keep_working(server, connect):
    service, _creds, _ = await _service(connect, server)
    assert await service.next_event() == ev.Ping()
    await service.send(ev.Pong())
    store = await connect(server.port, StoreClient())
    assert isinstance(await handshake(store, credentials()), ev.StoreAccepted)
    # Unknown opening line, garbage, a bad block header, a truncated block: each connection is closed.
    for junk in (b'{"type_connection":"nonsense"}\r\n', b"\x00\xff" * 100 + b"\r\n"):
        bad = await connect(server.port)
        await bad.raw(junk)
        assert await bad.closed_by_peer()
    bad = await connect(server.port, QueryClient())
    assert await handshake(bad, credentials()) == ev.HandshakeOK()
    await bad.raw(b"not a block header at all, not at all!!!!" + b"\0" * 40)
    assert await bad.closed_by_peer()
    truncated = await connect(server.port, StoreClient())
    assert isinstance(await handshake(truncated, credentials()), ev.StoreAccepted)
    await truncated.raw(encode_block(b"x" * 64)[:50])
    await truncated.close()
    # The sensor's other connections are unaffected.
    await store.send(ev.StoreQueries(StoreMessage(99, None, (b"SELECT 1",))))
    assert await store.next_event() == ev.StoreOK()
    with trio.fail_after(10):
        while True:
            event = await service.next_event()
            if event == ev.Ping():
                await service.send(ev.Pong())
                break
    await eventually(lambda: server.stats.protocol_errors["query"] >= 1)


async def test_keylog_has_keys_to_decrypt_the_connection(start_server, connect, tmp_path):
    from vmproto import keylog
    from vmproto.inspect.keys import load_keys

    path = tmp_path / "keys.jsonl"
    server = await start_server(keylog=path)
    client = await connect(server.port, StoreClient())
    creds = credentials()
    assert isinstance(await handshake(client, creds), ev.StoreAccepted)
    (entry,) = keylog.load(path)
    assert entry["type_connection"] == "store" and entry["conn"] == client.stream.socket.getsockname()[1]
    assert entry["aes_ckey"] == creds.aes_ckey and entry["aes_ivec"] == creds.aes_ivec
    assert entry["server_rsa_private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    found = load_keys(path).lookup(entry["conn"])  # the inspector reads it, private key included
    assert found is not None and found.private_key_pem is not None and found.aes_key == creds.aes_ckey.encode()[:16]


async def test_opening_line_timeout_and_per_address_cap(start_server, connect):
    server = await start_server(server_opening_line_timeout_s=1, server_max_connections_per_ip=2)
    slow = await connect(server.port)
    await slow.raw(b'{"type_connection":')
    second = await connect(server.port)
    third = await connect(server.port)
    assert await third.closed_by_peer(timeout=2)  # over the cap: closed at once, nothing written
    started = time.monotonic()
    assert await slow.closed_by_peer(timeout=5)
    assert 0.8 <= time.monotonic() - started < 3
    assert await second.closed_by_peer(timeout=5)
    assert server.stats.refused["per-address cap"] == 1
    assert server.stats.refused["opening line timeout"] == 2


async def test_task_pushed_during_a_pong_wait_is_sent_after_the_pong(server, connect):
    """Regression: a GUI command arriving while the service waited for a pong crashed the whole central
    (the machine refuses to send in PONG). The task must wait for the pong, then go out; others keep working."""
    # check_ping_response: only then does the central wait for the pong (spec §7.5), as current sensors ask.
    service, _creds, _ = await _service(connect, server, check_ping_response=True, auto_parameters=True)
    assert await service.next_event() == ev.Ping()  # the central now waits for our pong: do not answer yet
    gui = await connect(server.port, GuiCommandClient())
    await gui.send(ev.OpenConnection("gui_command", {"sensor_id": 2, "command": "getversion"}))
    with trio.move_on_after(1.0) as early:
        await service.next_event(timeout=2.0)
    assert early.cancelled_caught, "nothing may be sent to the sensor while the central waits for the pong"
    await service.send(ev.Pong())
    task = await service.next_event()
    assert isinstance(task, ev.Task) and task.command == b"getversion"
    other = await connect(server.port, ManagerCommandClient())  # the central is still alive and serving
    await other.send(ev.OpenConnection("manager_command", {"command": "active"}))
    assert b'"sensor_id":2' in await other.read_all()
