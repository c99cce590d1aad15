"""Unit tests of the decoder's stateful parts and standalone parsers."""

from __future__ import annotations

import zlib

import pytest

from vmproto.sensor.decode import (
    DecodedPacket,
    DecodeError,
    DecodeOptions,
    DecodeStats,
    Deduplicator,
    FragmentReassembler,
    HepStreamDecoder,
    IpfixStreamDecoder,
    OptionError,
    hep_to_record,
    parse_hep3,
    parse_ipfix_message,
)
from vmproto.sensor.decode.audiocodes import parse_acdr
from vmproto.sensor.decode.synth import build_ip_packet, inet_checksum
from vmproto.testing import pcapgen as g

TS = 1_700_000_000_000_000_000


def _v4_frag_args(frag: bytes) -> tuple:
    ihl = (frag[0] & 15) * 4
    ident = int.from_bytes(frag[4:6], "big")
    flags = int.from_bytes(frag[6:8], "big")
    return frag, 0, ihl, len(frag), ident, flags


def test_fragment_timeout_by_packet_time() -> None:
    stats = DecodeStats()
    r = FragmentReassembler(stats, timeout_ns=1_000)
    frags = g.fragment_v4(g.udp4("192.0.2.1", "192.0.2.2", 1, 2, b"x" * 3000), 1400)
    assert r.add_v4(TS, *_v4_frag_args(frags[0])) is None
    assert r.in_flight == 1
    # The rest arrives too late: the first is expired, the datagram never completes.
    assert r.add_v4(TS + 5_000, *_v4_frag_args(frags[1])) is None
    assert r.add_v4(TS + 5_000, *_v4_frag_args(frags[2])) is None
    assert stats.get("frag.timeout") == 1 and stats.get("frag.reassembled") == 0


def test_fragment_memory_bounds() -> None:
    stats = DecodeStats()
    r = FragmentReassembler(stats, max_datagrams=4, max_bytes=10_000)
    for i in range(20):
        ip = g.udp4("192.0.2.1", "192.0.2.2", 1, 2, b"y" * 3000, ident=i)
        r.add_v4(TS, *_v4_frag_args(g.fragment_v4(ip, 1400)[0]))
        assert r.in_flight <= 4 and r.held_bytes <= 10_000
    assert stats.get("frag.evicted") == 16


def test_fragment_oversize_is_dropped() -> None:
    stats = DecodeStats()
    r = FragmentReassembler(stats)
    bogus = g.ipv4("192.0.2.1", "192.0.2.2", 17, b"z" * 64, mf=True, frag_offset=65528)
    assert r.add_v4(TS, *_v4_frag_args(bogus)) is None
    assert stats.get("frag.oversize") == 1 and r.in_flight == 0


def _rec(ip: bytes, ts: int = TS) -> DecodedPacket:
    from vmproto.sensor.decode import Decoder

    (rec,) = Decoder().decode_ip(ts, ip)
    return rec


@pytest.mark.parametrize("mode", ["yes", "ip_only", "no"])
def test_dedup_modes(mode: str) -> None:
    stats = DecodeStats()
    d = Deduplicator(stats, mode, window_ns=1_000_000, max_entries=100)
    a = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"SIP/2.0 200 OK", ttl=64, ident=1)
    a_hop = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"SIP/2.0 200 OK", ttl=60, ident=1)
    other_id = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"SIP/2.0 200 OK", ttl=64, ident=2)
    assert not d.is_duplicate(_rec(a))
    assert d.is_duplicate(_rec(a_hop))  # TTL is ignored in every mode
    assert d.is_duplicate(_rec(other_id)) is (mode != "yes")  # only "yes" hashes the IP id
    assert not d.is_duplicate(_rec(a, TS + 2_000_000))  # outside the window again new


def test_dedup_memory_bound() -> None:
    stats = DecodeStats()
    d = Deduplicator(stats, window_ns=10**12, max_entries=10)
    for i in range(50):
        d.is_duplicate(_rec(g.udp4("192.0.2.1", "192.0.2.2", 1000 + i, 2, b"p")))
    assert len(d) == 10 and stats.get("dedup.evicted") == 40


def test_hep_parse_and_errors() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5062, b"INVITE sip:a SIP/2.0\r\n\r\n")
    msg = parse_hep3(g.hep3_message(ip, TS, capture_id=7))
    assert (msg.family, msg.ip_proto, msg.sport, msg.dport, msg.capture_id, msg.proto_type) == (2, 17, 5060, 5062, 7, 1)
    rec = hep_to_record(msg, 0)
    assert rec.ts_ns == TS // 1000 * 1000 and rec.tunnel == "hep"
    assert inet_checksum(rec.ip_packet[:20]) == 0
    # gzip-compressed payload (the reference's only accepted form) works too
    raw = g.hep3_message(ip, TS)
    gz = zlib.compressobj(wbits=31)
    payload = b"INVITE sip:a SIP/2.0\r\n\r\n"
    chunk = (16).to_bytes(2, "big")
    body = gz.compress(payload) + gz.flush()
    hep_gz = raw[6 : raw.index(b"\x00\x00\x00\x0f")] + b"\x00\x00" + chunk + (6 + len(body)).to_bytes(2, "big") + body
    msg = parse_hep3(b"HEP3" + (6 + len(hep_gz)).to_bytes(2, "big") + hep_gz)
    assert msg.payload == payload
    for bad, kind in [(b"HEP2\x00\x06", "hep_bad_magic"), (b"HEP3\x00\x40", "hep_bad_length"),
                      (b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x09", "hep_bad_chunk")]:
        with pytest.raises(DecodeError) as exc:
            parse_hep3(bad)
        assert exc.value.kind == kind


def test_hep_stream_decoder() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5062, b"BYE sip:a SIP/2.0\r\n\r\n")
    m = g.hep3_message(ip, TS)
    dec = HepStreamDecoder(max_buffer=4096)
    assert dec.feed(m[:3]) == []
    assert len(dec.feed(m[3:] + m + m[:7])) == 2
    assert len(dec.feed(m[7:])) == 1
    with pytest.raises(DecodeError):
        dec.feed(b"GARBAGE!")
    assert len(dec.feed(m)) == 1  # usable again after the error


def test_ipfix_stream_and_handshake_reply() -> None:
    sip = b"INVITE sip:b SIP/2.0\r\n\r\n"
    hs = g.ipfix_handshake()
    msg = g.ipfix_sip_in(TS, "192.0.2.1", "192.0.2.2", 5060, 5070, sip)
    dec = IpfixStreamDecoder()
    out = dec.feed(b"\x00\x01" + hs + msg[:30])
    assert out == [] and dec.skipped_bytes == 2
    (rec,) = dec.feed(msg[30:])
    assert (rec.src, rec.dst, rec.sport, rec.dport, rec.payload, rec.proto) == (
        g.addr("192.0.2.1"), g.addr("192.0.2.2"), 5060, 5070, sip, 17)
    assert dec.replies and dec.replies[0][16:18] == (257).to_bytes(2, "big")
    with pytest.raises(DecodeError):
        parse_ipfix_message(b"\x00\x09" + msg[2:])


def test_acdr_not_a_recording_and_truncated() -> None:
    assert parse_acdr(b"\x45" + bytes(40), 0, 41) is None  # major version 4: not ACDR
    with pytest.raises(DecodeError):
        parse_acdr(b"\x08" + bytes(16), 0, 17)


def test_synth_checksums_are_valid() -> None:
    ip4 = build_ip_packet(4, bytes(4), bytes([1, 2, 3, 4]), 6, 1, 2, b"abc")
    assert inet_checksum(ip4[:20]) == 0
    ip6 = build_ip_packet(6, bytes(16), bytes(15) + b"\x01", 17, 1, 2, b"abc")
    assert len(ip6) == 40 + 8 + 3
    with pytest.raises(ValueError):
        build_ip_packet(5, b"", b"", 17, 1, 2, b"")


@pytest.mark.parametrize("kw", [{"udp_port_l2tp": 70000}, {"deduplicate_ipheader": "maybe"},
                                {"frag_max_bytes": 0}, {"hep_bind_port": True}])
def test_bad_options(kw: dict) -> None:
    with pytest.raises(OptionError):
        DecodeOptions(**kw)


def test_batch_mismatch_is_an_error() -> None:
    from vmproto.sensor.decode import Decoder

    with pytest.raises(DecodeError):
        Decoder().decode_batch(1, [1, 2], [b""])
