"""Channel codecs (gzip/zstd/lzo) and packet-area codecs (snappy/lz4), spec §5."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vmproto.wire.compression import (
    Compression,
    PbCompression,
    compress,
    decompress,
    detect,
    pb_compress,
    pb_decompress,
)
from vmproto.wire.errors import RemoteProtocolError

KINDS = [Compression.NONE, Compression.GZIP, Compression.ZSTD, Compression.LZO]


def test_gzip_vector():
    assert compress(Compression.GZIP, b"select 1").hex() == "1f8b08000000000000032b4ecd494d2e51300400bda1a60e08000000"


def test_zstd_frame_header_has_no_size_no_checksum():
    out = compress(Compression.ZSTD, b"select 1" * 100)
    assert out[:4] == bytes.fromhex("28b52ffd") and out[4] == 0x00


def test_lzo_container_header():
    out = compress(Compression.LZO, b"12345678")
    assert out[:7] == bytes.fromhex("4c5a4f08000000")


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"\x1f\x8b", Compression.GZIP), (b"\x28\xb5\x2f\xfd", Compression.ZSTD), (b"LZO", Compression.LZO),
     (b"LZ", Compression.NONE), (b"", Compression.NONE), (b"select", Compression.NONE)],
)
def test_detect(data, kind):
    assert detect(data) is kind


@settings(max_examples=40)
@given(st.binary(max_size=5000), st.sampled_from(KINDS))
def test_round_trip(data, kind):
    # spec §5: the receiver sniffs magic bytes, so raw data that starts with a codec's magic cannot travel
    # uncompressed (test_uncompressed_magic_is_ambiguous pins what happens then).
    assume(not (kind is Compression.NONE and detect(data) is not Compression.NONE))
    got_kind, plain = decompress(compress(kind, data))
    assert got_kind is kind and plain == data


def test_uncompressed_magic_is_ambiguous():
    with pytest.raises(RemoteProtocolError, match="error in decompress zip"):
        decompress(compress(Compression.NONE, b"\x1f\x8bnot gzip"))


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD, Compression.LZO])
def test_bomb_is_refused_without_inflating_it(kind):
    packed = compress(kind, b"\0" * 5_000_000)
    assert len(packed) < 30_000
    with pytest.raises(RemoteProtocolError, match="larger than 100000 bytes"):
        decompress(packed, max_size=100_000)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [(Compression.GZIP, "error in decompress zip"), (Compression.ZSTD, "error in decompress zstd"),
     (Compression.LZO, "error in decompress lzo")],
)
def test_truncated_and_corrupt(kind, reason):
    packed = compress(kind, bytes(range(256)) * 40)
    with pytest.raises(RemoteProtocolError) as info:
        decompress(packed[: len(packed) // 2])
    assert info.value.reason == reason
    corrupt = bytearray(packed)
    for i in range(8, len(corrupt), 7):
        corrupt[i] ^= 0x55
    with pytest.raises(RemoteProtocolError):
        decompress(bytes(corrupt))


def test_gzip_trailing_bytes_are_ignored():
    assert decompress(compress(Compression.GZIP, b"abc") + b"tail") == (Compression.GZIP, b"abc")


def test_gzip_from_another_writer_is_accepted():
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    assert decompress(co.compress(b"hi") + co.flush())[1] == b"hi"


def test_zstd_concatenated_frames():
    one = compress(Compression.ZSTD, b"ab")
    assert decompress(one + one)[1] == b"abab"


@settings(max_examples=30)
@given(st.binary(min_size=1, max_size=5000), st.sampled_from(list(PbCompression)))
def test_pb_round_trip(data, method):
    assert pb_decompress(method, pb_compress(method, data), len(data)) == data


@pytest.mark.parametrize("method", list(PbCompression))
def test_pb_wrong_size_is_an_error(method):
    packed = pb_compress(method, b"abc" * 300)
    for size in (899, 901):
        with pytest.raises(RemoteProtocolError):
            pb_decompress(method, packed, size)


def test_lz4_block_read_as_snappy_fails_like_the_reference():
    packed = pb_compress(PbCompression.LZ4, bytes(range(200)) * 5)
    with pytest.raises(RemoteProtocolError, match="snappy_uncompress"):
        pb_decompress(PbCompression.SNAPPY, packed, 1000)


def test_snappy_uses_the_c_library_and_falls_back(monkeypatch):
    from vmproto.wire import _snappy

    data = bytes(range(256)) * 40 + b"RTP" * 500
    packed = pb_compress(PbCompression.SNAPPY, data)
    assert pb_decompress(PbCompression.SNAPPY, packed, len(data)) == data
    if _snappy.available():
        assert packed == _snappy.compress(data)
    monkeypatch.setattr(_snappy, "_lib", None)
    fallback = pb_compress(PbCompression.SNAPPY, data)
    assert pb_decompress(PbCompression.SNAPPY, fallback, len(data)) == data
