"""Random and mutated bytes into every parser: only vmproto.wire.errors types, and bounded buffers."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmproto.wire.compression import Compression, PbCompression, compress, decompress, pb_decompress
from vmproto.wire.crypto import AesBlockCipher, ManagerAesKey, unwrap_manager_request
from vmproto.wire.errors import ProtocolError
from vmproto.wire.framing import HEADER_SIZE, BlockReader, encode_block
from vmproto.wire.opening import OpeningReader, encode_opening
from vmproto.wire.pbstore import decode_container, encode_container, validate_container
from vmproto.wire.query_result import decode_result, encode_json_result
from vmproto.wire.store_msg import decode_store_message

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf[: max(0, len(buf) - cut)])


mutations = st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6), st.integers(0, 20))

SEEDS = {
    "blocks": encode_block(b"OK") + encode_block(b"ping" * 30),
    "container": encode_container([(1, 2, b"x" * 50), (1, 3, b"y" * 70)], counter=1),
    "container_plain": encode_container([(1, 2, b"x" * 50), (1, 3, b"y" * 70)], counter=1, compress=None),
    "gzip": compress(Compression.GZIP, b"select 1" * 20),
    "zstd": compress(Compression.ZSTD, b"select 1" * 20),
    "lzo": compress(Compression.LZO, b"select 1" * 20),
    "result": encode_json_result([("a", 1)], [[b"x"], [None]]),
    "store": b"10|T2026-01-01 00:00:00|L3:abc\nL2:de\n",
    "opening": encode_opening({"type_connection": "response", "gui_task_id": "1:2"}) + b"\r\nxx",
}


def _only_protocol_errors(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), mutations, st.binary(max_size=200))
def test_mutated_and_random_input(seed, mutation, noise):
    for data in (_mutate(SEEDS[seed], *mutation), noise):
        reader = BlockReader(max_payload=4096)
        try:
            reader.receive_data(data)
            while reader.next_block() is not None:
                pass
            assert reader.buffered < HEADER_SIZE + 4096
        except ProtocolError:
            pass
        opening = OpeningReader(max_size=256, manager_key=ManagerAesKey(b"k" * 16, b"i" * 16))
        try:
            opening.receive_data(data)
            opening.next_opening()
        except ProtocolError:
            pass
        assert opening.buffered <= 512
        _only_protocol_errors(decompress, data, max_size=10_000)
        for method in PbCompression:
            _only_protocol_errors(pb_decompress, method, data, 1000)
        _only_protocol_errors(decode_store_message, data)
        _only_protocol_errors(decode_result, data)
        _only_protocol_errors(validate_container, data, now=0, max_size=100_000)
        for method in (None, PbCompression.SNAPPY, PbCompression.LZ4):
            try:
                decode_container(data, method)
            except ProtocolError:
                pass
        _only_protocol_errors(AesBlockCipher(b"k" * 16, b"i" * 16).decrypt, data)
        _only_protocol_errors(unwrap_manager_request, b"aes-128-cbc:" + data + b":sea", ManagerAesKey(b"k" * 16, b"i" * 16))
