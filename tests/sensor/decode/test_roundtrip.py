"""Generated captures: every link layer and tunnel through pcapgen -> pcap/pcapng -> reader -> decoder."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmproto.sensor.capture import read_capture
from vmproto.sensor.decode import DecodedPacket, DecodeOptions, Decoder
from vmproto.testing import pcapgen as g

TS = 1_763_632_800_123_456_789
OPTS = DecodeOptions(hep=True, audiocodes=True, ipfix=True)

IPS = {
    "udp4": g.udp4("192.0.2.1", "192.0.2.2", 5060, 5062, g.sip_invite("rt-1")),
    "udp6": g.udp6("2001:db8::1", "2001:db8::2", 4000, 4002, g.rtp(1, 160, 5, b"a" * 160)),
    "tcp4": g.tcp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n", seq=77),
}


def _roundtrip(linktype: int, frames: list[bytes], *, pcapng: bool = False, options: DecodeOptions = OPTS,
               snaplen: int = 65535) -> tuple[list[DecodedPacket], Decoder]:
    buf = io.BytesIO()
    recs = [(TS + i * 1000, f) for i, f in enumerate(frames)]
    if pcapng:
        g.write_pcapng(buf, [(ts, linktype, f) for ts, f in recs])
    else:
        g.write_pcap(buf, linktype, recs, snaplen=snaplen)
    dec = Decoder(options)
    out: list[DecodedPacket] = []
    for b in read_capture(buf.getvalue()):
        out += dec.decode_batch(b.linktype, b.ts_ns, b.frames)
    return out, dec


@pytest.mark.parametrize("ipname", sorted(IPS))
@pytest.mark.parametrize("encap", sorted(g.ENCAPS))
@pytest.mark.parametrize("pcapng", [False, True])
def test_every_encapsulation_round_trips(encap: str, ipname: str, pcapng: bool) -> None:
    ip = IPS[ipname]
    linktype, frame = g.encapsulate(encap, ip, TS)
    (rec,), dec = _roundtrip(linktype, [frame], pcapng=pcapng)
    assert rec.ts_ns == TS
    assert rec.ip_packet == ip
    assert rec.tunnel == g.ENCAPS[encap][2]
    assert rec.ip_version == ip[0] >> 4
    if ipname == "tcp4":
        assert (rec.proto, rec.tcp_seq, rec.tcp_flags) == (6, 77, 0x18)
        assert rec.payload == b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    else:
        assert rec.proto == 17 and rec.payload == ip[-len(rec.payload):] and len(rec.payload) > 100
    assert rec.vlan == {"vlan": 100, "qinq": 20, "gre-in-vlan-in-vxlan": 7}.get(encap, -1)
    assert dec.stats.total("error") == 0


@pytest.mark.parametrize("encap", sorted(g.SYNTHETIC_ENCAPS))
def test_synthetic_encapsulations_keep_addresses_ports_payload(encap: str) -> None:
    ip = IPS["udp4"]
    linktype, frame = g.encapsulate(encap, ip, TS)
    (rec,), _ = _roundtrip(linktype, [frame])
    assert rec[:8] == (TS // 1000 * 1000 if encap.startswith("hep") else TS, 4, g.addr("192.0.2.1"),
                       g.addr("192.0.2.2"), 17, 5060, 5062, g.sip_invite("rt-1"))
    assert rec.tunnel == g.SYNTHETIC_ENCAPS[encap][2]
    # The synthesised packet decodes back to the same record.
    again = Decoder().decode_ip(rec.ts_ns, rec.ip_packet)
    assert again[0].payload == rec.payload and again[0].sport == 5060


def test_audiocodes_media_has_one_known_side() -> None:
    voice = g.rtp(3, 480, 9, b"v" * 160)
    frames = [g.ethernet(g.audiocodes_rtp("192.0.2.50", 20000, 10000, voice, to_net=False)),
              g.ethernet(g.audiocodes_rtp("192.0.2.50", 10000, 20000, voice, to_net=True))]
    (a, b), _ = _roundtrip(g.EN10MB, frames)
    assert (a.src, a.dst, a.sport, a.dport, a.payload) == (g.addr("192.0.2.50"), bytes(4), 20000, 10000, voice)
    assert (b.src, b.dst, b.sport, b.dport, b.payload) == (bytes(4), g.addr("192.0.2.50"), 10000, 20000, voice)


@pytest.mark.parametrize("encap", ["eth", "gre-key", "vxlan", "l2tpv3"])
@pytest.mark.parametrize("order", ["in", "reversed"])
def test_ipv4_fragments_reassemble_inside_tunnels(encap: str, order: str) -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, g.sip_invite("frag", pad=3000), ident=4242)
    frags = g.fragment_v4(ip, 1400)
    assert len(frags) == 3
    if order == "reversed":
        frags.reverse()
    frames = [g.encapsulate(encap, f)[1] for f in frags]
    (rec,), dec = _roundtrip(g.EN10MB, frames)
    assert rec.payload == g.sip_invite("frag", pad=3000)
    assert rec.ip_packet[20:] == ip[20:] and rec.ip_packet[6:8] == b"\0\0"
    assert dec.stats.get("frag.in") == 3 and dec.stats.get("frag.reassembled") == 1
    assert dec.frags.in_flight == 0 and dec.frags.held_bytes == 0


def test_ipv6_fragments_reassemble() -> None:
    ip = g.udp6("2001:db8::1", "2001:db8::2", 5060, 5060, g.sip_invite("f6", pad=2500))
    frags = g.fragment_v6(ip, 1280)
    (rec,), dec = _roundtrip(g.EN10MB, [g.ethernet(f) for f in reversed(frags)])
    assert rec.ip_packet == ip
    assert dec.stats.get("frag.reassembled") == 1


def test_fragments_disabled_by_udpfrag_no() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, g.sip_invite("nf", pad=3000))
    out, dec = _roundtrip(g.EN10MB, [g.ethernet(f) for f in g.fragment_v4(ip, 1400)],
                          options=DecodeOptions(udpfrag=False))
    assert out == [] and dec.stats.get("skip.fragment") == 3


def test_snaplen_truncation_keeps_what_was_captured() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 20000, 30000, g.rtp(1, 0, 1, b"z" * 1000))
    (rec,), dec = _roundtrip(g.EN10MB, [g.ethernet(ip)], snaplen=200)
    assert len(rec.ip_packet) == 200 - 14 and rec.payload == ip[28:186]
    assert dec.stats.get("truncated") == 1


def test_ipv6_extension_headers_are_walked() -> None:
    payload = g.udp("2001:db8::1", "2001:db8::2", 5060, 5060, b"SIP/2.0 200 OK\r\n\r\n")
    hop = bytes([60, 0]) + bytes(6)  # hop-by-hop -> destination options
    dst_opts = bytes([17, 0]) + bytes(6)  # destination options -> UDP
    ip = g.ipv6("2001:db8::1", "2001:db8::2", 0, payload, ext=hop + dst_opts)
    (rec,), _ = _roundtrip(g.EN10MB, [g.ethernet(ip)])
    assert rec.payload == b"SIP/2.0 200 OK\r\n\r\n" and rec.ip_packet == ip


def test_sctp_data_chunks_become_records() -> None:
    sip = g.sip_invite("sctp")
    data_chunk = bytes([0, 3]) + (16 + len(sip)).to_bytes(2, "big") + bytes(12) + sip
    data_chunk += b"\0" * (-len(data_chunk) % 4)
    sctp = (5060).to_bytes(2, "big") + (5060).to_bytes(2, "big") + bytes(8) + data_chunk
    (rec,), _ = _roundtrip(g.EN10MB, [g.ethernet(g.ipv4("192.0.2.1", "192.0.2.2", 132, sctp))])
    assert rec.proto == 132 and rec.payload == sip


def test_hep_and_ipfix_over_tcp_streams() -> None:
    sip = g.sip_invite("tcp-stream")
    msgs = [g.ipfix_handshake(), g.ipfix_sip_in(TS, "192.0.2.1", "192.0.2.2", 5060, 5060, sip, seq=1)]
    stream = b"".join(msgs)
    # Split the byte stream at an awkward place and retransmit one segment.
    pkts = g.tcp_stream("203.0.113.1", "203.0.113.2", 40001, 4739, [stream[:25], stream[25:]])
    pkts.insert(2, pkts[1])
    hep = g.hep3_message(g.udp4("192.0.2.3", "192.0.2.4", 5070, 5080, sip), TS)
    pkts += g.tcp_stream("203.0.113.1", "203.0.113.2", 40002, 9060, [hep[:10], hep[10:] + hep])
    out, dec = _roundtrip(g.EN10MB, [g.ethernet(p) for p in pkts])
    assert [(r.tunnel, r.payload, r.sport) for r in out] == [("ipfix", sip, 5060), ("hep", sip, 5070),
                                                             ("hep", sip, 5070)]
    assert out[0].ts_ns == TS // 1000 * 1000


def test_dedup_drops_copies_within_the_window() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, g.sip_invite("d"), ttl=64)
    one_more_hop = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, g.sip_invite("d"), ttl=63)
    frames = [g.ethernet(ip), g.ethernet(one_more_hop), g.ethernet(g.gre(ip))]
    out, dec = _roundtrip(g.EN10MB, frames, options=DecodeOptions(deduplicate=True))
    assert len(out) == 1 and dec.stats.get("dedup.dropped") == 2
    out, dec = _roundtrip(g.EN10MB, frames, options=DecodeOptions(deduplicate=True, dedup_window_ns=1))
    assert len(out) == 3


# -- malformed and truncated input ----------------------------------------------------------------------

ALL_ENCAPS = sorted(g.ENCAPS) + sorted(g.SYNTHETIC_ENCAPS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encap=st.sampled_from(ALL_ENCAPS), ipname=st.sampled_from(["udp4", "tcp4"]), data=st.data())
def test_malformed_frames_are_counted_never_raised(encap: str, ipname: str, data: st.DataObject) -> None:
    linktype, frame = g.encapsulate(encap, IPS[ipname], TS)
    cut = data.draw(st.integers(0, len(frame)))
    mutated = bytearray(frame[:cut])
    for _ in range(data.draw(st.integers(0, 4))):
        if mutated:
            i = data.draw(st.integers(0, len(mutated) - 1))
            mutated[i] = data.draw(st.integers(0, 255))
    dec = Decoder(OPTS)
    out = dec.decode_batch(linktype, [TS], [bytes(mutated)])
    assert len(out) <= 2
    if not out:
        c = dec.stats.as_dict()
        assert any(k.startswith(("error.", "skip.", "unknown_tunnel.", "frag.")) for k in c), c


@settings(max_examples=200, deadline=None)
@given(linktype=st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9999]), blob=st.binary(max_size=200))
def test_random_bytes_never_raise(linktype: int, blob: bytes) -> None:
    dec = Decoder(OPTS)
    dec.decode_batch(linktype, [TS], [blob])
    assert dec.stats.get("frames") == 1
