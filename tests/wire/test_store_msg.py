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
    BadStoreMessage,
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


def test_item_separator_byte_must_be_lf():
    # spec §8.3: the separator byte is LF (the reference skips it unchecked; vmproto parses strictly).
    with pytest.raises(BadStoreItems, match="missing LF after item"):
        decode_store_message(b"10|L1:aXL2:bc\n")


def test_no_bar_is_refused_and_closes():
    with pytest.raises(RemoteProtocolError) as info:
        decode_store_message(b"select 1")
    assert info.value.reason == "missing '|' separator"
    assert info.value.reply is None and info.value.close


def test_time_part_is_strict_after_t_digit():
    assert decode_store_message(b"10|Tx|y") == StoreMessage(10, None, (b"Tx|y",), False)
    for bad in (b"10|T2026-04-14 13:57:37.123|q", b"10|T2026-04-14|q", b"10|T2026-04-14 13:57:37", b"10|T1|x"):
        with pytest.raises(BadStoreMessage, match="bad time part"):
            decode_store_message(bad)


@pytest.mark.parametrize("head", [b"|x", b"1a|x", b" 10|x", b"+10|x", b"-1|x"])
def test_id_main_is_digits_only(head):
    with pytest.raises(BadStoreMessage, match="bad id_main"):
        decode_store_message(head)


def test_long_id_main_saturates_like_atoi():
    assert decode_store_message(b"9" * 5000 + b"|select 1").id_main == -1
    assert decode_store_message(b"0" * 5000 + b"10|select 1").id_main == 10


def test_bad_items_keep_the_parsed_part_but_refuse_the_message():
    with pytest.raises(BadStoreItems) as info:
        decode_store_message(b"10|L1:a\nXL2:bc\n")
    assert info.value.reason == "missing 'L' separator"
    assert info.value.partial.queries == (b"a",)
    assert info.value.reply is None and info.value.close  # spec §8.6: nothing applied, no reply, close
    with pytest.raises(BadStoreItems, match="missing ':' separator"):
        decode_store_message(b"10|L1:a\nL5")
    with pytest.raises(BadStoreItems, match="missing ':' separator"):
        decode_store_message(b"10|L1:a\nL:x\n")
    with pytest.raises(BadStoreItems, match="item length past the end"):
        decode_store_message(b"10|L1:a\nL5:abcde")  # no room for the LF


@pytest.mark.parametrize(
    "body",
    [b"L4294967295:" * 2000, b"L-1:" * 2000, b"L18446744073709551615:x\n" * 100, b"L" + b"9" * 5000 + b":x\n"],
)
def test_wrapping_or_huge_item_lengths_are_refused_without_amplification(body):
    """Lengths are checked against the bytes left (fuzz finding store-item-amplification, spec §17.5)."""
    with pytest.raises(BadStoreItems) as info:
        decode_store_message(b"10|L1:a\n" + body)
    assert info.value.partial.queries == (b"a",)


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=30))
def test_decoded_queries_never_outgrow_the_message(queries):
    text = encode_store_message(StoreMessage(10, None, tuple(queries), True))
    for cut in range(len(text) + 1):
        try:
            msg = decode_store_message(text[:cut])
        except RemoteProtocolError as exc:
            assert exc.reply is None and exc.close
            continue
        assert sum(map(len, msg.queries)) <= cut


def test_bodies_the_server_would_misread_are_sent_as_items():
    for body in (b"L5:abc", b"T1|x", b"T1" + b"x" * 40 + b"|", b"T9"):
        wire = encode_store_message(StoreMessage(10, None, (body,)))
        assert wire.startswith(b"10|L")
        assert decode_store_message(wire).queries == (body,)
    # after a time part a leading T DIGIT is plain body text
    wire = encode_store_message(StoreMessage(10, "2026-04-14 13:57:37", (b"T1|x",)))
    assert wire == b"10|T2026-04-14 13:57:37|T1|x"
    assert decode_store_message(wire).queries == (b"T1|x",)


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
    for bad_time in ("x|y", "2026-04-14 13:57:3\xff", "2026-04-14 13:57:37.5", "2026-04-14", "２０２６-04-14 13:57:37"):
        with pytest.raises(LocalProtocolError):
            encode_store_message(StoreMessage(10, bad_time, (b"q",)))
    with pytest.raises(LocalProtocolError):
        encode_store_message(StoreMessage(-1, None, (b"q",)))


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
