"""query machines end to end in memory (spec §6, §10)."""

from __future__ import annotations

import pytest

from tests.wire.pair import CKEY, IVEC, Pair, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, compress
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import encode_block
from vmproto.wire.query import QueryClient, QueryServer

OPEN = ev.OpenConnection("query")


def make(compression: int = Compression.GZIP, password: str = "refpass") -> Pair:
    return Pair(QueryClient(compression=compression), QueryServer(rsa_key=rsa_key(), password=password))


def ready(compression: int = Compression.GZIP) -> Pair:
    pair = make(compression)
    assert pair.handshake(OPEN, ev.Credentials("refpass", CKEY, IVEC), ev.HandshakeOK()) == ev.HandshakeOK()
    assert pair.client.state is State.READY and pair.server.state is State.READY
    return pair


def test_opening_line_is_byte_exact():
    pair = make()
    pair.client_send(OPEN)
    assert pair.c2s[0] == b'{"type_connection":"query"}\r\n'


@pytest.mark.parametrize("codec", list(Compression))
def test_request_and_reply_mirror_compression(codec):
    pair = ready(codec)
    got = pair.client_send(ev.QueryRequest(b"select 1", csv=True))
    assert got == [ev.QueryRequest(b"select 1", True, int(codec))]
    reply = pair.server_send(ev.QueryResponse(b'{"result":"OK"}'))
    assert reply == [ev.QueryResponse(b'{"result":"OK"}')]
    # The reply on the wire is compressed like the request (the client decompresses by magic).
    assert pair.server.state is State.READY and pair.client.state is State.READY


def test_error_reply_is_uncompressed_and_end_closes():
    pair = ready(Compression.GZIP)
    pair.client_send(ev.QueryRequest(b"bad sql"))
    pair.server_send(ev.QueryResponse(b'{"result":"1064|0|x"}', error=True))
    got = pair.client_send(ev.End())
    assert got == [ev.End(), ev.ConnectionClosed("closed")]
    # facts §10 vector 4: `_END_` as an AES block with the vector keys, uncompressed although queries are gzip.
    assert pair.c2s[-1][40:] == bytes.fromhex("d2a4f714e9449b2aa769f739330c55d0")
    assert pair.server.state is State.CLOSED and pair.client.state is State.CLOSED


def test_bad_password_gives_plain_block_and_closes():
    pair = make(password="other")
    pair.client_send(OPEN)
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    data = pair.client.send(ev.Credentials("refpass", CKEY, IVEC))
    pair.server.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.reason == "bad password"
    assert pair.server.state is State.CLOSED
    reply = pair.server.encode_reply(info.value)
    assert reply == encode_block(b"bad password")
    pair.client.receive_data(reply)
    assert pair.client.next_event() == ev.Refuse("bad password")
    assert pair.client.state is State.CLOSED
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()


def _credentials_json(pair: Pair, password_json: bytes) -> None:
    from vmproto.wire.crypto import rsa_encrypt
    from vmproto.wire.framing import byte_sum

    pair.client_send(OPEN)
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    text = (b'{"password":' + password_json + b',"aes_ckey":"' + CKEY.encode() + b'","aes_ivec":"' + IVEC.encode()
            + b'"}')
    pair.server.receive_data(encode_block(rsa_encrypt(pair.server.public_pem, text), byte_sum(text)))


@pytest.mark.parametrize(
    ("configured", "sent", "accepted"),
    [
        ("refpass", b'"refpass"', True),
        ("", b'""', True),  # empty equals empty (spec §6.6)
        ("", b"null", True),  # a null password reads as "" like json-c's get_string
        ("refpass", b'"refpas"', False),
        ("refpass", b'"refpass "', False),
        ("refpass", b'"REFPASS"', False),
        ("p\u00e9", b'"p\\u00e9"', True),  # the same text, escaped or not
        ("refpass", b'"\\ud800"', False),  # a lone surrogate has no byte form: never equal, no stray error
        ("\udcff", b'"\xff"', True),  # non-UTF-8 bytes compare as bytes (surrogate escapes)
    ],
)
def test_password_comparison_is_exact_on_bytes(configured, sent, accepted):
    pair = make(password=configured)
    _credentials_json(pair, sent)
    if accepted:
        assert isinstance(pair.server.next_event(), ev.Credentials)
        return
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.reason == "bad password" and info.value.reply == b"bad password"
    assert "refpass" not in repr(info.value) and "refpass" not in str(info.value)


def test_server_password_without_byte_form_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        QueryServer(rsa_key=rsa_key(), password="\ud800")


def test_credentials_without_password_close_silently():
    pair = make()
    pair.client_send(OPEN)
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    from vmproto.wire.crypto import rsa_encrypt
    from vmproto.wire.framing import byte_sum

    text = b'{"aes_ckey":"' + CKEY.encode() + b'","aes_ivec":"' + IVEC.encode() + b'"}'
    pair.server.receive_data(encode_block(rsa_encrypt(pair.server.public_pem, text), byte_sum(text)))
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.reason == "failed read password & aes keys" and info.value.reply is None


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_empty_request_closes_without_reply(codec):
    """spec §10.2, §5.8, §10.11: a request that decompresses to nothing closes the connection, no reply."""
    pair = ready()
    from vmproto.wire.crypto import AesBlockCipher
    from vmproto.wire.framing import byte_sum

    cipher = AesBlockCipher(CKEY, IVEC)
    empty = compress(codec, b"")
    pair.server.receive_data(encode_block(cipher.encrypt(empty), byte_sum(empty)))
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.reason == "empty query" and info.value.reply is None and info.value.close
    assert pair.server.state is State.CLOSED
    assert pair.server.encode_reply(info.value) == b""
    with pytest.raises(LocalProtocolError):
        pair.client.send(ev.QueryRequest(b""))


def test_idle_timeout_closes_server_after_60s():
    pair = ready()
    assert pair.server.get_timer() == pytest.approx(pair.now + 60)
    _c, s = pair.advance(59)
    assert s == []
    _c, s = pair.advance(2)
    assert s == [ev.ConnectionClosed("timeout")]
    assert pair.server.state is State.CLOSED


def test_send_in_wrong_state_is_local_error_and_changes_nothing():
    pair = make()
    with pytest.raises(LocalProtocolError):
        pair.client.send(ev.QueryRequest(b"select 1"))
    assert pair.client.state is State.OPENING
