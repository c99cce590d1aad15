"""service machines end to end in memory (spec §7, facts §3.2/§4.1, README items 7/8)."""

from __future__ import annotations

import pytest

from tests.wire.pair import CKEY, IVEC, Pair, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, compress
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.framing import encode_block
from vmproto.wire.service import (
    ServiceClient,
    ServiceServer,
    duplicate_refusal,
    negotiate_compression,
    version_int,
)

OPEN = ev.OpenConnection("service")


def creds(**kw):
    base = dict(sensor_id=2, password="refpass", aes_ckey=CKEY, aes_ivec=IVEC, sensor_version=2026004000)
    base.update(kw)
    return ev.ServiceCredentials(**base)


def make(**server_kw) -> Pair:
    server_kw.setdefault("password", "refpass")
    return Pair(ServiceClient(), ServiceServer(rsa_key=rsa_key(4096), **server_kw))


def until_credentials(pair: Pair, credentials: ev.ServiceCredentials):
    pair.client_send(OPEN)
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    data = pair.client.send(credentials, pair.now)
    pair.c2s.append(data)
    pair.server.receive_data(data, pair.now)
    return data


def ready(**kw) -> Pair:
    pair = make()
    until_credentials(pair, creds(**kw))
    assert pair.server.next_event() == pair.server.credentials
    params = pair.server.parameters(mysql_concat_limit=1000)
    got = pair.server_send(ev.ServiceAccepted(params))
    assert got[0] == ev.ServiceAccepted(pair.client.parameters)
    return pair


def test_credentials_json_field_order_is_the_references():
    pair = make()
    pair.client_send(OPEN)
    assert pair.c2s[0] == b'{"type_connection":"service"}\r\n'
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    # facts §10 vector 20 (+ README item 8: 209 bytes + id digits + password)
    text = pair.client._credential_fields(creds(compress_types="gzip,zstd,lzo"))
    from vmproto.wire import vmjson

    expected = (b'{"sensor_id":2,"password":"refpass","aes_ckey":"' + CKEY.encode() + b'","aes_ivec":"'
                + IVEC.encode() + b'","sensor_version":2026004000,"check_ping_response":1,"auto_parameters":1,'
                b'"compress_types":"gzip,zstd,lzo"}')
    assert vmjson.dumps(text) == expected
    assert len(expected) == 209 + 1 + len("refpass")
    restore = vmjson.dumps(pair.client._credential_fields(creds(restore=True, sensor_string="next_service_1")))
    assert restore.startswith(b'{"sensor_id":2,"sensor_string":"next_service_1","password"')
    assert b'"sensor_version":2026004000,"restore":1,"check_ping_response":1' in restore


def test_auto_parameter_reply_matches_vector_21():
    pair = ready()
    # the accept block is the last s2c write
    assert pair.s2c[-1][40:] == (b'{"result":"OK","mysql_concat_limit":1000,"type_compress":3,"type_compress_query":3,'
                                 b'"type_compress_store":3,"enable_responses_sender":1}')
    params = pair.client.parameters
    assert params.query_compression == 3 and params.store_compression == 3 and params.enable_responses_sender


def test_compression_choice():
    assert negotiate_compression(3, "gzip,lzo") == 1
    assert negotiate_compression(2, "gzip,zstd") == 1
    assert negotiate_compression(2, "gzip,lzo") == 2
    assert negotiate_compression(0, "") == 0
    assert version_int("2026.04.0") == 2026004000 and version_int("23.7.0") == 23007000


def test_plain_ok_without_auto_parameters():
    pair = make()
    until_credentials(pair, creds(auto_parameters=False))
    pair.server.next_event()
    assert pair.server_send(ev.ServiceAccepted(pair.server.parameters()))[0] == ev.ServiceAccepted(None)
    assert pair.s2c[-1] == encode_block(b"OK")


@pytest.mark.parametrize(
    ("server_kw", "credentials", "reply"),
    [
        ({"require_new_store_version": True}, creds(sensor_version=23006999), b"need upgrade sensor!!!"),
        ({}, creds(password="wrong"), b"bad password"),
        ({}, creds(sensor_id=0), b"client sensor_id must be different from receiver sensor_id"),
        ({"server_sensor_id": 5}, creds(sensor_id=5), b"client sensor_id must be different from receiver sensor_id"),
    ],
)
def test_refusals_in_reference_order(server_kw, credentials, reply):
    pair = make(**server_kw)
    until_credentials(pair, credentials)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.reply == reply and info.value.reply_mode == "plain"
    assert pair.server.state is State.CLOSED
    pair.client.receive_data(pair.server.encode_reply(info.value))
    assert pair.client.next_event() == ev.Refuse(reply.decode())


def test_need_upgrade_is_checked_before_the_password():
    pair = make(require_new_store_version=True)
    until_credentials(pair, creds(sensor_version=1, password="wrong"))
    with pytest.raises(RemoteProtocolError, match="need upgrade"):
        pair.server.next_event()


def test_duplicate_refusal_is_held_back_five_seconds():
    pair = make()
    until_credentials(pair, creds())
    pair.server.next_event()
    assert pair.server.send(duplicate_refusal(2), pair.now) == b""
    assert pair.server.state is State.REFUSING
    assert pair.server.get_timer() == pytest.approx(pair.now + 5)
    client_events, _ = pair.advance(4.9)
    assert client_events == []
    client_events, _ = pair.advance(0.2)
    assert client_events[0] == ev.Refuse("client with sensor_id 2 is already connected, refusing connection")
    assert pair.server.state is State.CLOSED


def test_ping_pong_cycle_and_first_ping_at_once():
    pair = ready()
    assert pair.server.get_timer() == pair.now  # first ping right after the OK
    client_events, _ = pair.advance(0.1)
    assert client_events == [ev.Ping()]
    assert pair.s2c[-1] == encode_block(b"ping") and pair.server.state is State.PONG
    assert pair.client_send(ev.Pong()) == [ev.Pong()]
    assert pair.c2s[-1] == encode_block(b"pong")
    assert pair.server.get_timer() == pytest.approx(pair.now - 0.0 + 5.0, abs=0.2)
    client_events, _ = pair.advance(5.0)
    assert client_events == [ev.Ping()]


def test_missing_pong_ends_service_after_five_seconds():
    pair = ready()
    pair.advance(0.0)
    _c, server_events = pair.advance(5.1)
    assert server_events == [ev.ConnectionClosed("timeout")]


def test_stop_ends_service():
    pair = ready()
    pair.advance(0.0)
    assert pair.client_send(ev.Stop()) == [ev.Stop(), ev.ConnectionClosed("closed")]
    assert pair.c2s[-1] == encode_block(b"stop")


def test_tasks_and_chart_push_with_use_encode_data():
    pair = ready(use_encode_data=True, remote_chart_server=True)
    got = pair.server_send(ev.Task("1713095857123456:42", b"getversion"))
    assert got == [ev.Task("1713095857123456:42", b"getversion")]
    assert pair.s2c[-1][40:] != b"1713095857123456:42/getversion"  # AES on the wire
    got = pair.server_send(ev.ChartPush(b"L3:abc\n"))
    assert got == [ev.ChartPush(b"L3:abc\n")]
    assert pair.client_send(ev.ChartReply("OK")) == [ev.ChartReply("OK")]
    pair.server_send(ev.ChartPush(b"x"))
    _c, server_events = pair.advance(31)
    assert ev.ChartReply("") in server_events and pair.server.state is State.READY


def test_client_ignores_payload_without_slash_and_times_out():
    pair = ready()
    pair.client.receive_data(encode_block(b"noslash"), pair.now)
    event = pair.client.next_event()
    assert isinstance(event, ev.Rejected) and event.reply is None
    bad_rch = encode_block(b"rch:" + compress(Compression.GZIP, b"abc")[:10])
    pair.client.receive_data(bad_rch, pair.now)
    event = pair.client.next_event()
    assert isinstance(event, ev.Rejected) and event.reply == "error in decompress zip"
    assert pair.client.state is State.CHART_REPLY


def test_client_receive_timeout():
    pair = make()
    pair.client.set_timeout(State.READY, 30)
    until_credentials(pair, creds(check_ping_response=False))
    pair.server.next_event()
    pair.server_send(ev.ServiceAccepted(pair.server.parameters()))
    # The server does not wait for pongs from this sensor; a pong in READY is still accepted.
    pair.advance(0)
    assert pair.server.state is State.READY
    assert pair.client_send(ev.Pong()) == [ev.Pong()]
    client_events, _ = pair.advance(31)
    assert ev.ConnectionClosed("timeout") in client_events


def test_unexpected_client_block_closes_server():
    pair = ready()
    pair.server.receive_data(encode_block(b"hello"), pair.now)
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()
    assert pair.server.state is State.CLOSED


def test_long_digit_run_in_credentials_is_read_like_c_atoi():
    """sensor_version / sensor_id are read with C atoi before the password check (fuzz finding atoi-digit-limit):
    a digit run past Python's int-string limit saturates instead of raising ValueError."""
    server = ServiceServer(rsa_key=rsa_key(4096), password="refpass", require_new_store_version=True)
    long_run = "9" * 5000
    text = ('{"sensor_id":"' + long_run + '","password":"wrong","aes_ckey":"' + CKEY + '","aes_ivec":"' + IVEC
            + '","sensor_version":"-' + long_run + '"}').encode()
    with pytest.raises(RemoteProtocolError) as info:
        server._check_credentials(text)  # one RSA block cannot carry 5 000 digits: the parser is called directly
    assert info.value.reply == b"need upgrade sensor!!!"  # atoi saturates to LONG_MIN -> 0 < 23007000
