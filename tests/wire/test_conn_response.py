"""response, responses, keycheck, gui_command, manager_command and the acceptor (spec §1, §11, §12)."""

from __future__ import annotations

import pytest

from tests.wire.pair import CKEY, IVEC, Pair, drain, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.acceptor import Acceptor
from vmproto.wire.crypto import AesStreamEncryptor, ManagerAesKey, wrap_manager_request
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.gui import (
    MISSING_SERVICE,
    GuiCommandClient,
    GuiCommandServer,
    ManagerCommandClient,
    ManagerCommandServer,
    unknown_command,
)
from vmproto.wire.keycheck import KeycheckClient, KeycheckServer
from vmproto.wire.query import QueryServer
from vmproto.wire.response import ResponseClient, ResponsesClient, ResponseServer, ResponsesServer

OPEN_RESPONSE = ev.OpenConnection("response", {"gui_task_id": "1713095857123456:42"})
MANAGER_KEY = ManagerAesKey(b"0123456789abcdef", b"fedcba9876543210")


def _collect(events):
    return b"".join(e.data for e in events if isinstance(e, ev.ResponseData | ev.ReplyData))


def test_response_stream_end_to_end():
    pair = Pair(ResponseClient(aes_ckey=CKEY, aes_ivec=IVEC), ResponseServer())
    got = pair.client_send(OPEN_RESPONSE)
    assert got == [OPEN_RESPONSE] and pair.server.gui_task_id == "1713095857123456:42"
    assert pair.c2s[0] == b'{"type_connection":"response","gui_task_id":"1713095857123456:42"}\r\n'
    # data arrives before the caller found the task: held, then decrypted
    pair.client_send(ev.ResponseData(b"hello " * 10))
    assert pair.server.state is State.KEYS
    got = pair.server_send(ev.ResponseKeys(CKEY, IVEC))
    assert got == []
    events = drain(pair.server)
    events += pair.client_send(ev.ResponseData(b"world"))
    events += pair.client_send(ev.ResponseEnd())
    events += pair.client_close()
    assert _collect(events) == b"hello " * 10 + b"world"
    assert ev.ResponseEnd() in events and pair.server.state is State.CLOSED


def test_empty_response_is_no_ciphertext_at_all():
    client = ResponseClient(aes_ckey=CKEY, aes_ivec=IVEC)
    client.send(OPEN_RESPONSE)
    assert client.send(ev.ResponseEnd()) == b""
    server = ResponseServer()
    server.receive_data(b'{"type_connection":"response","gui_task_id":"x"}\r\n')
    server.receive_data(b"")
    assert server.next_event() == ev.OpenConnection("response", {"gui_task_id": "x"})
    server.send(ev.ResponseKeys(CKEY, IVEC))
    assert drain(server) == [ev.ResponseEnd(), ev.ConnectionClosed("eof")]


def _stream_starting_with_newline() -> tuple[bytes, bytes]:
    for n in range(2000):
        plain = b"output %d" % n
        enc = AesStreamEncryptor(CKEY.encode()[:16], IVEC.encode())
        ct = enc.update(plain) + enc.finalize()
        if ct[0] in (0x0A, 0x0D):
            return plain, ct
    raise AssertionError("no ciphertext starting with CR/LF found")


@pytest.mark.parametrize("skip", [True, False])
def test_remainder_crlf_quirk_is_an_option(skip):
    plain, ct = _stream_starting_with_newline()
    server = ResponseServer(skip_remainder_crlf=skip)
    server.receive_data(b'{"type_connection":"response","gui_task_id":"x"}\r\n' + ct)  # one segment
    server.receive_data(b"")
    server.next_event()
    server.send(ev.ResponseKeys(CKEY, IVEC))
    if skip:  # the reference drops the leading CR/LF byte and fails to decrypt
        with pytest.raises(RemoteProtocolError, match="failed aes decrypt"):
            drain(server)
    else:
        assert _collect(drain(server)) == plain


def test_unknown_task_closes_silently():
    server = ResponseServer()
    server.receive_data(b'{"type_connection":"response","gui_task_id":"nope"}\r\n')
    server.next_event()
    assert server.send(ev.ConnectionClosed()) == b"" and server.state is State.CLOSED


def test_responses_items_and_errors():
    pair = Pair(ResponsesClient(), ResponsesServer(rsa_key=rsa_key(), password="pw"))
    pair.handshake(ev.OpenConnection("responses"), ev.Credentials("pw", CKEY, IVEC), ev.HandshakeOK())
    assert pair.c2s[0] == b'{"type_connection":"responses"}\r\n'
    got = pair.client_send(ev.ResponseItem("1:2", b"12345"))
    assert got == [ev.ResponseItem("1:2", b"12345")]
    assert pair.server_send(ev.ResponseReply()) == [ev.ResponseReply("OK")]
    pair.client_send(ev.ResponseItem("1:3", b"x"))
    assert pair.server_send(ev.ResponseReply("unknown gui task id")) == [ev.ResponseReply("unknown gui task id")]
    # '#' only as the very last byte is not found by the reference
    raw = pair.server._aes_block(b"1:4#")
    pair.client._state = State.REPLY
    pair.server.receive_data(raw)
    event = pair.server.next_event()
    assert event == ev.Rejected("missing gui task id", "missing gui task id", b"1:4#")
    assert pair.server_send(ev.ResponseReply(event.reply)) == [ev.ResponseReply("missing gui task id")]


def test_keycheck_round_trip():
    pair = Pair(KeycheckClient(), KeycheckServer(rsa_key=rsa_key(), password="pw"))
    pair.handshake(ev.OpenConnection("keycheck"), ev.Credentials("pw", CKEY, IVEC), ev.HandshakeOK())
    assert pair.client_send(ev.KeycheckRequest(b"abc")) == [ev.KeycheckRequest(b"abc")]
    assert pair.server_send(ev.KeycheckReply(b"error: undefined keycheck on server side")) == [
        ev.KeycheckReply(b"error: undefined keycheck on server side")]


def test_gui_command_plain_missing_service():
    pair = Pair(GuiCommandClient(), GuiCommandServer())
    open_event = ev.OpenConnection("gui_command", {"sensor_id": 2, "command": "getversion"})
    got = pair.client_send(open_event)
    assert got == [open_event, ev.GuiCommand(2, "getversion", "getversion", None)]
    assert pair.server_send(ev.RawReply(MISSING_SERVICE)) == [ev.ReplyData(MISSING_SERVICE)]
    assert pair.server_close() == [ev.ConnectionClosed("eof")]


def test_gui_command_need_aes_rewrite_and_timeout():
    server = GuiCommandServer(manager_key=MANAGER_KEY, not_need_aes=lambda c: c.startswith("getversion"))
    server.receive_data(b'{"type_connection":"gui_command","sensor_id":"2","command":"listcalls"}\r\n', 100.0)
    events = drain(server, 100.0)
    assert events[1] == ev.GuiCommand(2, "need_aes", "listcalls", None)
    assert server.get_timer() == 400.0
    assert server.handle_timer(400.0) == b"timeout" and server.state is State.CLOSED
    exempt = GuiCommandServer(manager_key=MANAGER_KEY, not_need_aes=lambda c: c.startswith("getversion"))
    exempt.receive_data(b'{"type_connection":"gui_command","sensor_id":2,"command":"getversion"}\r\n')
    assert drain(exempt)[1].command == "getversion"


def test_gui_command_aes_reply_stream():
    pair = Pair(GuiCommandClient(manager_key=MANAGER_KEY), GuiCommandServer(manager_key=MANAGER_KEY))
    open_event = ev.OpenConnection("gui_command", {"sensor_id": 2, "command": "getversion"}, "aes-128-cbc")
    got = pair.client_send(open_event)
    assert got[1] == ev.GuiCommand(2, "getversion", "getversion", "aes-128-cbc")
    opening = b'{"type_connection":"gui_command","sensor_id":2,"command":"getversion"}'
    assert pair.c2s[0] == wrap_manager_request(opening, MANAGER_KEY)
    events = pair.server_send(ev.ReplyData(b"2026.04.0"))
    events += pair.server_send(ev.ReplyEnd())
    # facts §10 vector 15: the reply for 2026.04.0 under the vector manager key
    assert b"".join(pair.s2c) == bytes.fromhex("6165733a" "a4297f8c65ee8d85093c2468e3972681")
    events += pair.server_close()
    assert _collect(events) == b"2026.04.0" and events[-1] == ev.ConnectionClosed("eof")


def test_manager_command():
    pair = Pair(ManagerCommandClient(), ManagerCommandServer())
    got = pair.client_send(ev.OpenConnection("manager_command", {"command": "active"}))
    assert got[1] == ev.ManagerCommand("active")
    pair.server_send(ev.ActiveServices((("10.0.0.2", 40000, 2),)))
    assert pair.s2c[-1] == b'{"count":1,"services":[{"ip":"10.0.0.2","port":40000,"sensor_id":2}]}'
    server = ManagerCommandServer()
    server.receive_data(b'{"type_connection":"manager_command","command":"x"}\r\n')
    drain(server)
    assert server.send(unknown_command("x")) == b"unknown command: x"
    server = ManagerCommandServer()
    server.receive_data(b'{"type_connection":"manager_command","command":"active"}\r\n')
    drain(server)
    assert server.send(ev.ActiveServices()) == b'{"count":0}'


def test_acceptor_dispatch_and_caps():
    acceptor = Acceptor()
    acceptor.receive_data(b'{"type_connection":"query"}\r\n', 10.0)
    opening = acceptor.next_opening()
    conn = acceptor.build(opening, rsa_key=rsa_key(), password="pw")
    assert isinstance(conn, QueryServer) and conn.state is State.RSA_KEY
    assert conn.next_event() == ev.OpenConnection("query")
    slow = Acceptor(timeout=30)
    slow.receive_data(b'{"type_conn', 0.0)
    assert slow.next_opening() is None and slow.get_timer() == 30.0
    with pytest.raises(RemoteProtocolError, match="opening line timeout"):
        slow.handle_timer(30.0)
    bad = Acceptor()
    bad.receive_data(b'{"type_connection":"sniffer_service"}\r\n')
    with pytest.raises(RemoteProtocolError):
        bad.next_opening()
    big = Acceptor(max_size=100)
    with pytest.raises(RemoteProtocolError):
        big.receive_data(b"x" * 101)


def test_key_strings_without_a_byte_form_are_errors_of_our_types():
    """A lone surrogate (JSON `\\ud800` from a sensor's service credentials) in the keys a caller hands over is a
    LocalProtocolError, never UnicodeEncodeError (fuzz finding surrogate-key-strings)."""
    from vmproto.wire.errors import LocalProtocolError

    server = ResponseServer()
    server.receive_data(b'{"type_connection":"response","gui_task_id":"x"}\r\n')
    assert server.next_event() == ev.OpenConnection("response", {"gui_task_id": "x"})
    with pytest.raises(LocalProtocolError, match="aes_ckey is not a byte string"):
        server.send(ev.ResponseKeys("\ud800" + CKEY[1:], IVEC))
    with pytest.raises(LocalProtocolError, match="aes_ivec is not a byte string"):
        ResponseClient(aes_ckey=CKEY, aes_ivec=IVEC[:-1] + "\ud800")
    # non-UTF-8 bytes kept as surrogate escapes go back to those bytes
    ResponseClient(aes_ckey="\udcff" * 16, aes_ivec=IVEC)
