"""pcap_block_store v7 containers (spec §9)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmproto.wire.compression import PbCompression
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
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
    with pytest.raises(RemoteProtocolError, match="caplen = 61"):
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
