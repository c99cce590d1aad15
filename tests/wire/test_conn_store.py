"""store machines end to end in memory (spec §8, facts §4.6)."""

from __future__ import annotations

import pytest

from tests.wire.pair import CKEY, IVEC, Pair, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, compress
from vmproto.wire.crypto import AesBlockCipher
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.framing import byte_sum, encode_block
from vmproto.wire.store import StoreClient, StoreServer
from vmproto.wire.store_msg import (
    CLIENT_TIME_TOO_GREAT_REPLY,
    STORE_CONNECT_REPLY,
    BadStoreItems,
    BadStoreMessage,
    StoreMessage,
    queue_full_reply,
    queue_full_usleep,
)

NOW = 1_795_666_896.0  # 2026-11-26 04:21:36 UTC


def ready(codec=Compression.ZSTD, accept: ev.StoreAccepted | None = None) -> Pair:
    accept = accept or ev.StoreAccepted()
    pair = Pair(StoreClient(compression=codec), StoreServer(rsa_key=rsa_key(), password="refpass"), now=NOW)
    got = pair.handshake(ev.OpenConnection("store"), ev.Credentials("refpass", CKEY, IVEC), accept)
    assert got == accept
    return pair


def test_connect_reply_json_and_simple_ok():
    pair = ready()
    assert pair.s2c[-1] == encode_block(STORE_CONNECT_REPLY)
    assert pair.client.check_store and pair.client.check_time
    pair = ready(accept=ev.StoreAccepted(False, False))
    assert pair.s2c[-1] == encode_block(b"OK")


@pytest.mark.parametrize("codec", list(Compression))
def test_message_round_trip_and_ack_later(codec):
    pair = ready(codec)
    msg = StoreMessage(10, "2026-11-26 04:21:36", (b"abcde", b"xyz"), True)
    got = pair.client_send(ev.StoreQueries(msg))
    assert got == [ev.StoreQueries(msg)]
    # the caller acks whenever it chooses (vmproto: on commit); until then the server is in REPLY
    assert pair.server.state is State.REPLY
    assert pair.server_send(ev.StoreOK()) == [ev.StoreOK()]
    assert pair.client.state is State.READY


def test_message_text_on_the_wire_vector_9():
    pair = ready(Compression.NONE)
    msg = StoreMessage(10, "2026-04-14 13:57:37", (b"abcde", b"xyz"), True)
    pair.client_send(ev.StoreQueries(msg))
    cipher = AesBlockCipher(CKEY, IVEC)
    assert cipher.decrypt(pair.c2s[-1][40:]) == b"10|T2026-04-14 13:57:37|L5:abcde\nL3:xyz\n"


def test_queue_full_reply_is_the_reference_json_and_keeps_the_connection():
    pair = ready()
    pair.client_send(ev.StoreCheck())
    usleep = queue_full_usleep(1000, 0)
    got = pair.server_send(ev.StoreError("sql queue is full", usleep=usleep, quietly=True, keep_connect=True))
    assert AesBlockCipher(CKEY, IVEC).decrypt(pair.s2c[-1][40:]) == queue_full_reply(usleep)
    assert got == [ev.StoreError("sql queue is full", True, usleep, True, True)]
    assert pair.client.state is State.READY and pair.server.state is State.READY


def _raw(pair: Pair, text: bytes, codec=Compression.NONE) -> None:
    payload = compress(codec, text)
    pair.server.receive_data(encode_block(AesBlockCipher(CKEY, IVEC).encrypt(payload), byte_sum(payload)), NOW)


@pytest.mark.parametrize(
    ("raw", "codec", "reason"),
    [
        (b"no separator", Compression.NONE, "missing '|' separator"),
        (b"", Compression.GZIP, "empty store message"),
        (b"x1|select 1", Compression.NONE, "bad id_main"),
        (b"10|T2026-11-26 04:21|select 1", Compression.NONE, "bad time part"),
    ],
)
def test_malformed_message_closes_without_reply(raw, codec, reason):
    """spec §8.5 steps 3-4, §8.6, §8.13: no reply, nothing applied, the connection closes."""
    pair = ready()
    _raw(pair, raw, codec)
    with pytest.raises(BadStoreMessage) as info:
        pair.server.next_event(NOW)
    assert info.value.reason == reason and info.value.reply is None and info.value.close
    assert info.value.head == raw[:64]
    assert pair.server.state is State.CLOSED


def test_client_time_too_far_ahead_closes_with_json():
    pair = ready()
    msg = StoreMessage(10, "2026-11-27 04:21:37", (b"select 1",), False)
    pair.server.receive_data(pair.client.send(ev.StoreQueries(msg), NOW), NOW)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event(NOW)
    assert pair.server.state is State.CLOSED
    reply = pair.server.encode_reply(info.value)
    pair.client.receive_data(reply, NOW)
    assert pair.client.next_event(NOW) == ev.StoreError("client time is too greater than server time",
                                                        next_attempt=False)
    assert AesBlockCipher(CKEY, IVEC).decrypt(reply[40:]) == CLIENT_TIME_TOO_GREAT_REPLY
    # exactly 24 h ahead is still accepted; behind is always accepted
    pair = ready()
    _raw(pair, b"10|T2026-11-27 04:21:36|select 1")
    assert isinstance(pair.server.next_event(NOW), ev.StoreQueries)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"L3:abc\nX", "missing 'L' separator"),
        (b"L3:abc\nL999:short\n", "item length past the end"),  # the conformance case store-malformed-items
        (b"L3:abc\nL4294967295:x\n", "item length past the end"),
        (b"L3:abcXL1:x\n", "missing LF after item"),
    ],
)
def test_bad_items_reject_the_whole_message(body, reason):
    """spec §8.6: a bad l-item rejects the whole message -- the items before the defect are not applied -- and
    closes without a reply (the reference would apply them and answer `OK`, spec §16 Q16)."""
    pair = ready()
    _raw(pair, b"10|" + body)
    with pytest.raises(BadStoreItems) as info:
        pair.server.next_event(NOW)
    assert info.value.reason == reason and info.value.reply is None and info.value.close
    assert pair.server.state is State.CLOSED
