"""Block framing (spec §2): header layout, byte-sum checksum, incremental reader and its caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.framing import (
    BLOCK_MAGIC,
    HEADER_SIZE,
    BlockHeader,
    BlockReader,
    byte_sum,
    encode_block,
    verify_checksum,
)


def test_plain_ok_block_is_byte_exact():
    assert encode_block(b"OK").hex() == (
        "766d5f636c6f75645f726f757465725f626c6f636b5f68656164657200000000" "020000009a000000" "4f4b"
    )


def test_empty_block_is_header_only():
    block = encode_block(b"")
    assert len(block) == HEADER_SIZE and block[32:40] == bytes(8)


@given(st.binary(max_size=3000))
def test_byte_sum_matches_naive_sum(data):
    assert byte_sum(data) == sum(data) % 2**32
    assert byte_sum(memoryview(data)) == byte_sum(bytearray(data)) == byte_sum(data)


def test_byte_sum_wraps_at_32_bits():
    # 2**32 / 255 bytes of 0xff overflow the u32 accumulator; use a strided view to stay small.
    n = 16_843_010  # 255 * n > 2**32
    data = b"\xff" * n
    assert byte_sum(data) == (255 * n) % 2**32


def test_byte_sum_on_non_byte_memoryview():
    data = bytes(range(256)) * 10
    assert byte_sum(memoryview(data).cast("H")) == sum(data)


@settings(max_examples=60)
@given(payloads=st.lists(st.binary(max_size=600), min_size=1, max_size=6), cuts=st.lists(st.integers(1, 97)))
def test_reader_round_trip_any_chunking(payloads, cuts):
    stream = b"".join(encode_block(p) for p in payloads)
    reader = BlockReader(max_payload=1000)
    got = []
    pos = 0
    sizes = iter(cuts)
    while pos < len(stream):
        step = next(sizes, 50)
        reader.receive_data(stream[pos : pos + step])
        pos += step
        while (item := reader.next_block()) is not None:
            header, payload = item
            verify_checksum(header, payload)
            got.append(payload)
        assert reader.buffered < HEADER_SIZE + 1000
    assert got == payloads and reader.buffered == 0


def test_bad_magic_fails_at_once_and_stays_failed():
    reader = BlockReader()
    bad = bytearray(encode_block(b"x"))
    bad[3] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        reader.receive_data(bytes(bad))
    assert info.value.reason == "bad block header" and info.value.reply is None and info.value.close
    with pytest.raises(RemoteProtocolError):
        reader.next_block()


def test_bytes_28_to_31_are_not_checked():
    block = bytearray(encode_block(b"ping"))
    block[28:32] = b"\x01\x02\x03\x04"
    reader = BlockReader()
    reader.receive_data(bytes(block))
    assert reader.next_block() == (BlockHeader(4, 430), b"ping")


def test_oversized_length_is_refused_before_the_payload_arrives():
    reader = BlockReader(max_payload=100)
    header = encode_block(b"y" * 101)[:HEADER_SIZE]
    with pytest.raises(RemoteProtocolError, match="block too large"):
        reader.receive_data(header)
    assert reader.buffered == 0


def test_second_bad_header_is_reported_after_the_good_block():
    reader = BlockReader()
    reader.receive_data(encode_block(b"OK") + b"garbage" * 10)
    assert reader.next_block()[1] == b"OK"
    with pytest.raises(RemoteProtocolError, match="bad block header"):
        reader.next_block()


def test_checksum_mismatch():
    with pytest.raises(RemoteProtocolError) as info:
        verify_checksum(BlockHeader(2, 155), b"OK")
    assert info.value.reason == "bad checksum"


def test_magic_constant():
    assert BLOCK_MAGIC == b"vm_cloud_router_block_header" and len(BLOCK_MAGIC) == 28
