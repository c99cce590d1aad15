"""pcap_block_store v7 containers (spec §9)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmproto.wire import pbkernel
from vmproto.wire.compression import PbCompression
from vmproto.wire.crypto import AesBlockCipher
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import byte_sum, encode_block
from vmproto.wire.packetbuffer import PacketbufferClient, _encrypt_frame
from vmproto.wire.pbstore import (
    HM_PLUS,
    HM_PLUS2,
    PLUS2_SIZE,
    PLUS_SIZE,
    VLAN_NOSET,
    ContainerBuilder,
    checksum32buf,
    decode_container,
    encode_container,
    peek_header,
    validate_container,
)

NOW = 1_795_667_292


@pytest.fixture(autouse=True, params=["c", "python"])
def kernel_mode(request, monkeypatch):
    """Every test here runs on the C kernel and on the pure-Python reference path: same results, same errors."""
    monkeypatch.setenv("VMPROTO_PB_KERNEL", request.param)
    if request.param == "c" and pbkernel.load() is None:
        pytest.skip("no C compiler: the kernel path cannot be tested here")
    return request.param


def _one_packet(**kw):
    b = ContainerBuilder(HM_PLUS)
    b.add(NOW - 60, 5, b"\x02" * 60, 60, kw.pop("ip_offset", 14))
    return b.build(counter=1, time_s=kw.pop("time_s", NOW), sensor_id=3, ifname=b"read_from", **kw)


def _reason(payload, **kw):
    with pytest.raises(RemoteProtocolError) as info:
        validate_container(payload, now=kw.pop("now", NOW), **kw)
    assert info.value.reply == info.value.reason.encode() and info.value.reply_mode == "aes"
    assert not info.value.close
    return info.value.reason


@pytest.mark.parametrize(("data", "value"), [(b"\xff\xff", 65534), (b"\x01\x02\x03", 6), (b"\x80", 65408), (b"", 0)])
def test_checksum32buf_vectors(data, value):
    assert checksum32buf(data) == value


@given(st.binary(max_size=3000))
def test_checksum32buf_is_signed_sum_mod_65536(data):
    assert checksum32buf(data) == sum(b - 256 if b > 127 else b for b in data) % 65536


def test_header_sizes():
    assert (PLUS_SIZE, PLUS2_SIZE, VLAN_NOSET) == (36, 58, 0xFFFE)


@settings(max_examples=30)
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999), st.binary(max_size=300)), min_size=1,
             max_size=20),
    st.sampled_from([HM_PLUS, HM_PLUS2]),
    st.sampled_from([None, PbCompression.SNAPPY, PbCompression.LZ4]),
    st.booleans(),
)
def test_round_trip(packets, hm, method, checksum):
    payload = encode_container(packets, hm=hm, counter=7, time_s=NOW, sensor_id=-1, compress=method,
                               checksum=checksum)
    validate_container(payload, now=NOW)
    cont = decode_container(payload, method)
    assert cont.header.counter == 7 and cont.header.sensor_id == -1 and len(cont) == len(packets)
    got = [(ts, us, bytes(data)) for ts, us, caplen, _l, _e, _o, _d, vlan, _f, data in cont.iter_packets()]
    assert got == [(ts, us, data) for ts, us, data in packets]
    ph, data = cont.packet(0)
    assert ph.vlan == VLAN_NOSET and ph.header_ip_encaps_offset == ph.header_ip_offset == 14
    assert (ph.detect_headers is not None) == (hm == HM_PLUS2)


def test_validation_order_and_texts():
    good = _one_packet()
    validate_container(good, now=NOW)
    assert _reason(good, max_size=len(good) - 1) == "too big"
    assert _reason(b"pcap_block_storX" + good[16:]) == "missing / bad block id"
    assert _reason(good[:16] + b"\x06" + good[17:]) == "bad version - sender and receiver must be the same version"
    assert _reason(good, now=NOW + 31) == (
        "Time difference between server and client (id_sensor:3) is too big (31s) - data cannot be received. "
        "Please synchronise time on both server and client. Or increase configuration parameter "
        "receive_packetbuffer_maximum_time_diff_s on server."
    )
    validate_container(good, now=NOW + 1800)  # whole half hours are forgiven
    validate_container(good, now=NOW - 3600 - 30)
    # |diff| mod 1800: 1770 s is not forgiven even though it is 30 s short of a half hour
    assert "(1770s)" in _reason(good, now=NOW - 3600 + 30)
    assert "(id_sensor:local)" in _reason(good, now=NOW + 100, sensor_label="local")
    bad_sum = bytearray(good)
    bad_sum[48] ^= 1
    assert _reason(bytes(bad_sum)) == "bad checksum"
    # a broken title wins over a broken checksum: the reference's order
    assert _reason(b"X" + bytes(bad_sum[1:])) == "missing / bad block id"


def test_time_zero_skips_the_time_check():
    validate_container(_one_packet(time_s=0), now=12345)


def test_bad_headers_uncompressed_only():
    payload = _one_packet(ip_offset=1001, compress=None)
    assert _reason(payload) == "bad headers - header_ip_offset = 1001"
    validate_container(_one_packet(ip_offset=1001, compress=PbCompression.SNAPPY), now=NOW)
    big = bytearray(_one_packet(compress=None, checksum=False))
    struct.pack_into("<I", big, 64 + 4 + 8, 70000)
    assert _reason(bytes(big)) == "bad headers - caplen = 70000"


def test_bad_offsets():
    b = ContainerBuilder()
    b.add(1, 2, b"a" * 10)
    b.add(1, 2, b"b" * 10)
    payload = bytearray(b.build(counter=1, compress=None, checksum=False))
    struct.pack_into("<I", payload, 68, 0)  # second offset == first
    assert _reason(bytes(payload)) == "bad offsets"
    struct.pack_into("<I", payload, 68, 10_000)  # past the area
    assert _reason(bytes(payload)) == "bad offsets"


def test_truncated_and_trailing():
    good = _one_packet()
    assert _reason(good[:-1]) == "bad size / offset"
    assert _reason(good[:30]) == "bad size / offset"
    validate_container(good + b"trailing", now=NOW)
    assert len(decode_container(good + b"trailing")) == 1


def test_decode_catches_packets_running_past_the_area():
    payload = bytearray(_one_packet(compress=None, checksum=False))
    struct.pack_into("<I", payload, 64 + 4 + 8, 61)
    with pytest.raises(RemoteProtocolError, match="^bad offsets$"):  # spec §9.3 layout, §9.8 row 10
        decode_container(bytes(payload), None)


def test_builder_refuses_nonsense():
    with pytest.raises(LocalProtocolError):
        ContainerBuilder().build(counter=1)
    with pytest.raises(LocalProtocolError):
        ContainerBuilder(2)
    b = ContainerBuilder()
    with pytest.raises(LocalProtocolError):
        b.add(-1, 0, b"x")
    b.add(1, 0, b"x")
    with pytest.raises(LocalProtocolError):
        b.build(counter=1, ifname=b"0123456789")
    compressed = encode_container([(1, 0, b"x")], counter=1)
    with pytest.raises(LocalProtocolError):
        decode_container(compressed, None)


def test_peek_header_fields():
    h = peek_header(_one_packet())
    assert (h.version, h.count, h.sensor_id, h.ifname_text, h.hm, h.counter, h.require_confirmation) == (
        7, 1, 3, "read_from", 0, 1, 1
    )


def _with_size(payload: bytes, size: int) -> bytes:
    out = bytearray(payload)
    struct.pack_into("<I", out, 20, size)
    return bytes(out)


@pytest.mark.parametrize("method", [PbCompression.SNAPPY, PbCompression.LZ4])
def test_declared_area_over_256_mib_is_too_big_before_any_allocation(method):
    """spec §9.8 row 10 / §5.8: a compressed container declaring more than 256 MiB is refused by validation and
    by decoding, without asking the codec for the declared size (fuzz finding pb-uncompressed-size-cap)."""
    good = _one_packet(compress=method, checksum=False)
    for size in (256 * 1024 * 1024 + 1, 0xFFFFFFFF):
        huge = _with_size(good, size)
        assert _reason(huge, max_size=1 << 40) == "too big"
        with pytest.raises(RemoteProtocolError, match="^too big$"):
            decode_container(huge, method)


def test_declared_area_is_also_capped_by_the_container_cap():
    """spec §5.8: the declared area must also stay within 10 x packetbuffer_block_maxsize (validate's max_size)."""
    good = _one_packet(compress=PbCompression.SNAPPY, checksum=False)
    assert _reason(_with_size(good, 4097), max_size=4096) == "too big"
    with pytest.raises(RemoteProtocolError, match="^too big$"):
        decode_container(_with_size(good, 4097), PbCompression.SNAPPY, max_size=4096)


def test_pb_decompress_refuses_a_size_over_its_cap():
    from vmproto.wire.compression import pb_compress, pb_decompress

    data = pb_compress(PbCompression.LZ4, b"x" * 100)
    assert pb_decompress(PbCompression.LZ4, data, 100, max_size=100) == b"x" * 100
    for size in (101, -1):
        with pytest.raises(RemoteProtocolError, match="^too big$"):
            pb_decompress(PbCompression.LZ4, data, size, max_size=100)


def _two_packets(hm: int = HM_PLUS) -> bytearray:
    b = ContainerBuilder(hm)
    b.add(1, 2, b"a" * 10)
    b.add(1, 2, b"b" * 10)
    return bytearray(b.build(counter=1, compress=None, checksum=False))


def _pad_area_start(payload: bytearray, header_size: int) -> None:
    """Four bytes before the first packet: offsets and size moved along, so only the layout is wrong."""
    payload[72:72] = b"\0" * 4
    struct.pack_into("<I", payload, 20, struct.unpack_from("<I", payload, 20)[0] + 4)
    struct.pack_into("<II", payload, 64, 4, 4 + header_size + 10)


@pytest.mark.parametrize("hm", [HM_PLUS, HM_PLUS2])
@pytest.mark.parametrize(
    ("what", "mutate"),
    [
        ("caplen runs into the next header", lambda p, h: struct.pack_into("<I", p, 72 + 8, 11)),
        ("caplen leaves a gap", lambda p, h: struct.pack_into("<I", p, 72 + 8, 9)),
        ("last packet runs past the area", lambda p, h: struct.pack_into("<I", p, 72 + h + 10 + 8, 11)),
        ("last packet ends before the area", lambda p, h: struct.pack_into("<I", p, 72 + h + 10 + 8, 9)),
        ("padding before the first packet", lambda p, h: _pad_area_start(p, h)),
    ],
)
def test_layout_violations_are_bad_offsets_in_validation_and_decoding(hm, what, mutate):
    """spec §9.3 layout, §9.8 row 10 (fuzz finding pb-layout-unchecked): what validation accepts, decoding
    accepts too, so the central never acknowledges a container it then has to drop."""
    payload = _two_packets(hm)
    header_size = PLUS2_SIZE if hm == HM_PLUS2 else PLUS_SIZE
    validate_container(bytes(payload), now=NOW)
    assert len(decode_container(bytes(payload), None)) == 2
    mutate(payload, header_size)
    assert _reason(bytes(payload)) == "bad offsets", what
    with pytest.raises(RemoteProtocolError, match="^bad offsets$"):
        decode_container(bytes(payload), None)


def test_decoded_compressed_area_gets_rows_8_to_10():
    """A compressed area is checked after decoding like an uncompressed one (spec §9.8 notes)."""
    from vmproto.wire.compression import pb_compress

    plain = _two_packets()
    area = bytearray(plain[72:])
    struct.pack_into("<I", area, 8, 70000)
    comp = pb_compress(PbCompression.SNAPPY, bytes(area))
    header = bytearray(plain[:72])
    struct.pack_into("<I", header, 24, len(comp))
    payload = bytes(header) + comp
    validate_container(payload, now=NOW)  # a compressed area is not inspected before the reply
    with pytest.raises(RemoteProtocolError, match="^bad headers - caplen = 70000$"):
        decode_container(payload, PbCompression.SNAPPY)


def test_count_zero_is_bad_offsets():
    """spec §9.8 row 7: count 0 -> `bad offsets`, with the checksum off or recomputed over the declared extent.

    Row 6 (checksum) comes first: zeroing `count` shortens the declared container by 4 bytes, so a checksum made
    for the original extent no longer matches and the reply is `bad checksum` (the reference's too)."""
    good = bytearray(_one_packet(compress=None))
    struct.pack_into("<I", good, 28, 0)
    assert _reason(bytes(good)) == "bad checksum"
    size = struct.unpack_from("<I", good, 20)[0]
    struct.pack_into("<I", good, 48, max(checksum32buf(bytes(good[64 : 64 + size])), 1))
    assert _reason(bytes(good)) == "bad offsets"
    no_sum = bytearray(_one_packet(compress=None, checksum=False))
    struct.pack_into("<I", no_sum, 28, 0)
    assert _reason(bytes(no_sum)) == "bad offsets"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_kernel_sums_equal_the_python_sums(data):
    got = pbkernel.sums(data)
    if got is not None:
        assert got == (byte_sum(data), (sum(b - 256 * (b >= 128) for b in data)) & 0xFFFF)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 1000, 65_537])
def test_encrypted_frame_equals_the_generic_encoding(size):
    key, iv = b"0123456789abcdef", b"fedcba9876543210"
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    expected = encode_block(AesBlockCipher(key, iv).encrypt(payload), byte_sum(payload))
    assert _encrypt_frame(key, iv, payload) == expected


def test_prepare_before_the_handshake_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        PacketbufferClient().prepare(b"x" * 64)


def test_bad_caplen_and_ip_offset_report_the_first_bad_packet():
    builder = ContainerBuilder()
    builder.add(1, 0, b"a" * 10)
    builder.add(1, 0, b"b" * 10, header_ip_offset=1001)
    builder.add(1, 0, b"c" * 10)
    payload = bytearray(builder.build(counter=1, compress=None, checksum=False))
    struct.pack_into("<I", payload, 64 + 4 * 3 + 2 * (PLUS_SIZE + 10) + 8, 70_000)  # third caplen: later packet
    with pytest.raises(RemoteProtocolError) as err:
        validate_container(bytes(payload), now=NOW)
    assert err.value.reason == "bad headers - header_ip_offset = 1001"
