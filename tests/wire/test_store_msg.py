"""Store message syntax and replies (spec §8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.store_msg import (
    CHECK,
    CLIENT_TIME_TOO_GREAT_REPLY,
    STORE_CONNECT_REPLY,
    BadStoreItems,
    StoreMessage,
    decode_store_message,
    encode_store_message,
    queue_full_reply,
    queue_full_usleep,
)


def test_vector_batched_with_time():
    text = b"10|T2026-04-14 13:57:37|L5:abcde\nL3:xyz\n"
    msg = decode_store_message(text)
    assert msg == StoreMessage(10, "2026-04-14 13:57:37", (b"abcde", b"xyz"), True)
    assert encode_store_message(msg) == text


def test_single_body():
    assert decode_store_message(b"10|select 1") == StoreMessage(10, None, (b"select 1",), False)
    assert encode_store_message(StoreMessage(1010, None, (b"x",))) == b"1010|x"


def test_item_separator_byte_is_not_checked():
    # The reference skips the byte after each item without looking at it.
    assert decode_store_message(b"10|L1:aXL2:bc\n").queries == (b"a", b"bc")


def test_no_bar_is_silently_ignored():
    with pytest.raises(RemoteProtocolError) as info:
        decode_store_message(b"select 1")
    assert info.value.reply is None and not info.value.close


def test_time_needs_digit_and_bar_within_20():
    assert decode_store_message(b"10|Tx|y").client_time is None
    long = b"10|T2026-04-14 13:57:37.123|q"
    assert decode_store_message(long) == StoreMessage(10, None, (long[3:],), False)


def test_bad_items_keep_the_parsed_part():
    with pytest.raises(BadStoreItems) as info:
        decode_store_message(b"10|L1:a\nXL2:bc\n")
    assert info.value.reason == "missing 'L' separator"
    assert info.value.partial.queries == (b"a",) and info.value.reply == b"OK"
    with pytest.raises(BadStoreItems, match="missing ':' separator"):
        decode_store_message(b"10|L1:a\nL5")


def test_bodies_the_server_would_misread_are_sent_as_items():
    for body in (b"L5:abc", b"T1|x"):
        wire = encode_store_message(StoreMessage(10, None, (body,)))
        assert decode_store_message(wire).queries == (body,)


@given(
    st.integers(0, 2000),
    st.one_of(st.none(), st.just("2026-11-26 05:00:00")),
    st.lists(st.binary(max_size=40), min_size=1, max_size=5),
    st.booleans(),
)
def test_round_trip(id_main, client_time, queries, batched):
    msg = StoreMessage(id_main, client_time, tuple(queries), batched)
    back = decode_store_message(encode_store_message(msg))
    assert (back.id_main, back.client_time, back.queries) == (id_main, client_time, tuple(queries))


def test_encode_rejects_nonsense():
    with pytest.raises(LocalProtocolError):
        encode_store_message(StoreMessage(10, None, ()))
    with pytest.raises(LocalProtocolError):
        encode_store_message(StoreMessage(10, "x|y", (b"q",)))


def test_fixed_replies():
    assert CHECK == b"check"
    assert STORE_CONNECT_REPLY == b'{"rslt":"OK","check_store":1,"check_time":1}'
    assert CLIENT_TIME_TOO_GREAT_REPLY == b'{"error":"client time is too greater than server time","next_attempt":0}'
    assert queue_full_reply(750000) == (
        b'{"error":"sql queue is full","next_attempt":1,"usleep":750000,"quietly":1,"keep_connect":1}'
    )


def test_queue_full_usleep_range():
    values = [queue_full_usleep(1000, r) for r in range(100)]
    assert min(values) == 750000 and max(values) == 997000
    assert queue_full_usleep(1000, 1) == 752000  # integer division before * 1000
    with pytest.raises(LocalProtocolError):
        queue_full_usleep(1000, 100)
