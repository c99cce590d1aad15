"""The C decode kernel against the pure-Python decoder, which is the reference.

Random, mutated and truncated frames of every link type and tunnel, in mixed batches and under several
option sets, must give identical records (in order) and identical counters through both paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmproto.sensor.capture.frames import FrameList
from vmproto.sensor.decode import DecodedPacket, DecodeOptions, Decoder
from vmproto.sensor.decode import kernel as kmod
from vmproto.testing import pcapgen as g

pytestmark = pytest.mark.skipif(not kmod.kernel_available(), reason="C decode kernel cannot be built here")

TS = 1_763_632_800_123_456_789
SIP = g.sip_invite("k-1")

IPS = {
    "udp4": g.udp4("192.0.2.1", "192.0.2.2", 5060, 5062, SIP),
    "udp4-rtp": g.udp4("192.0.2.7", "198.51.100.9", 40000, 30000, g.rtp(1, 160, 5, b"a" * 160), ttl=3),
    "udp4-options": g.ipv4("192.0.2.1", "192.0.2.2", 17, g.udp("192.0.2.1", "192.0.2.2", 5060, 5060, SIP),
                           options=b"\x01\x01\x01\x00"),
    "udp4-padded": g.udp4("192.0.2.1", "192.0.2.2", 5060, 5062, SIP) + b"\0" * 6,
    "udp6": g.udp6("2001:db8::1", "2001:db8::2", 4000, 4002, g.rtp(1, 160, 5, b"b" * 160)),
    "udp6-ext": g.ipv6("2001:db8::1", "2001:db8::2", 0, g.udp("2001:db8::1", "2001:db8::2", 5060, 5060, SIP),
                       ext=bytes([60, 0]) + bytes(6) + bytes([17, 0]) + bytes(6)),
    "udp6-atomic-frag": g.ipv6("2001:db8::1", "2001:db8::2", 44,
                               g.udp("2001:db8::1", "2001:db8::2", 5060, 5060, SIP),
                               ext=bytes([17, 0, 0, 0, 0, 0, 0, 9])),
    "tcp4": g.tcp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n", seq=77),
    "icmp4": g.ipv4("192.0.2.1", "192.0.2.2", 1, b"\x08\x00" + bytes(30)),
    "sctp4": g.ipv4("192.0.2.1", "192.0.2.2", 132, (5060).to_bytes(2, "big") * 2 + bytes(8)
                    + bytes([0, 3]) + (16 + 8).to_bytes(2, "big") + bytes(12) + b"INVITE x"),
    "frag4": g.fragment_v4(g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, g.sip_invite("fr", pad=2000)), 1400)[0],
    "tzsp-port": g.udp4("192.0.2.1", "192.0.2.2", 37008, 37008, b"\x01\x00\x00\x01\x01" + bytes(40)),
    "vxlan-not": g.udp4("192.0.2.1", "192.0.2.2", 1234, 4789, bytes(40)),
    "l2tp-port": g.udp4("192.0.2.1", "192.0.2.2", 1701, 1701, bytes(30)),
    "hep-port": g.udp4("192.0.2.1", "192.0.2.2", 9060, 9060, b"HEP3" + bytes(20)),
    "tzsp-control": g.udp4("192.0.2.1", "192.0.2.2", 37008, 37008, b"\x01\x02\x00\x01\x01"
                           + g.ethernet(g.udp4("192.0.2.3", "192.0.2.4", 5060, 5060, SIP))),
}
# Tunnels as the "IP packet" give every encapsulation a nested one (depth limits, outermost name wins).
IPS |= {
    "in-vxlan": g.vxlan(IPS["udp4"]),
    "in-ipip": g.ipip(IPS["udp6"]),
    "in-gre": g.gre(IPS["tcp4"], key=3),
    "in-erspan2": g.erspan2(IPS["udp4"]),
    "in-tzsp": g.tzsp(IPS["udp4-rtp"], tags=b"\x00\x0a\x02\x12\x34"),
    # GRE with the routing bit: Python refuses it (unknown_tunnel.gre_routing); so must the kernel.
    "gre-routing": g.outer4(47, b"\x40\x00\x08\x00" + IPS["udp4"]),
    "gre-version1": g.outer4(47, b"\x00\x01\x08\x00" + IPS["udp4"]),
}
ALL_ENCAPS = sorted(g.ENCAPS) + sorted(g.SYNTHETIC_ENCAPS)
# Encapsulations the kernel must take itself (the rest go to Python by design).
KERNEL_ENCAPS = sorted(set(g.ENCAPS) - {"l2tpv2", "l2tpv2-compressed", "l2tpv3", "l2tpv3-cookie"})
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9999]

OPTION_SETS = [
    DecodeOptions(),
    DecodeOptions(hep=True, audiocodes=True, ipfix=True),
    DecodeOptions(ipv6=False, udpfrag=False),
    DecodeOptions(max_tunnel_depth=1),
    DecodeOptions(udp_port_vxlan=0, udp_port_tzsp=4789, udp_port_l2tp=37008),
    DecodeOptions(udp_port_tzsp=0, udp_port_l2tp=0, deduplicate=True),
    DecodeOptions(hep=True, hep_bind_port=5060, audiocodes=True, tcp_port_audiocodes=5060),
]


def _both(options: DecodeOptions, batches: list[tuple[int, list[int], list[bytes]]], as_frame_list: bool = False
          ) -> tuple[list[DecodedPacket], dict[str, int]]:
    results = []
    for choice in ("c", "python"):
        dec = Decoder(options, kernel=choice)
        assert dec.uses_kernel == (choice == "c")
        out: list[DecodedPacket] = []
        for linktype, ts, frames in batches:
            seq = FrameList.from_frames(frames) if as_frame_list else frames
            out += dec.decode_batch(linktype, ts, seq)
        results.append((out, dec.stats.as_dict()))
    (c_out, c_stats), (py_out, py_stats) = results
    assert c_out == py_out
    assert c_stats == py_stats
    for rec in c_out:
        assert type(rec) is DecodedPacket
        assert [type(v) for v in rec] == [type(v) for v in py_out[c_out.index(rec)]]
    return c_out, c_stats


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, bytes]:
    """A frame of any link type and tunnel, often mutated in its headers, cut or padded; or noise."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(LINKTYPES)), draw(st.binary(max_size=120))
    encap = draw(st.sampled_from(ALL_ENCAPS))
    ip = IPS[draw(st.sampled_from(sorted(IPS)))]
    linktype, frame = g.encapsulate(encap, ip, TS)
    buf = bytearray(frame)
    if kind >= 4:  # header mutations: mostly in the first 120 bytes, where the kernel decides
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, min(len(buf), 120) - 1))
            if draw(st.booleans()):  # one flag or length bit
                buf[i] ^= 1 << draw(st.integers(0, 7))
            else:
                buf[i] = draw(st.sampled_from([0, 1, 2, 4, 5, 6, 8, 0x11, 0x2F, 0x45, 0x60, 0x81, 0x88, 0xFF,
                                               draw(st.integers(0, 255))]))
    if kind in (2, 5):
        buf = buf[: draw(st.integers(0, len(buf)))]
    if kind == 3:
        buf += draw(st.binary(min_size=1, max_size=16))
    return linktype, bytes(buf)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(frames(), min_size=1, max_size=8), options=st.sampled_from(OPTION_SETS),
       as_frame_list=st.booleans())
def test_kernel_matches_python_on_random_and_mutated_frames(items: list[tuple[int, bytes]], options: DecodeOptions,
                                                            as_frame_list: bool) -> None:
    # Consecutive frames of one link type share a batch, as a capture would deliver them.
    batches: list[tuple[int, list[int], list[bytes]]] = []
    for i, (linktype, frame) in enumerate(items):
        if not batches or batches[-1][0] != linktype:
            batches.append((linktype, [], []))
        batches[-1][1].append(TS + i)
        batches[-1][2].append(frame)
    _both(options, batches, as_frame_list)


@pytest.mark.parametrize("encap", KERNEL_ENCAPS)
@pytest.mark.parametrize("ipname", ["udp4", "udp6", "tcp4", "udp4-options", "udp6-ext", "udp4-padded"])
def test_common_encapsulations_stay_in_the_kernel(encap: str, ipname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    linktype, frame = g.encapsulate(encap, IPS[ipname], TS)
    dec = Decoder(kernel="c")
    slow: list[bytes] = []
    original = dec._slow_frame
    monkeypatch.setattr(dec, "_slow_frame", lambda lt, ts, f, out: (slow.append(f), original(lt, ts, f, out)))
    (rec,) = dec.decode_batch(linktype, [TS], [frame])
    assert slow == []
    ip = IPS[ipname][:-6] if ipname == "udp4-padded" else IPS[ipname]  # padding is not part of the packet
    assert rec.ip_packet == ip and rec.tunnel == g.ENCAPS[encap][2]
    _both(DecodeOptions(), [(linktype, [TS], [frame])])


def test_python_frames_interleave_in_capture_order() -> None:
    plain = [g.ethernet(IPS["udp4"]), g.ethernet(IPS["udp6"])]
    sctp = g.ethernet(IPS["sctp4"])
    frags = [g.ethernet(f) for f in g.fragment_v4(g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060,
                                                         g.sip_invite("fr", pad=3000)), 1400)]
    batch = [plain[0], frags[0], sctp, plain[1], frags[1], b"junk", frags[2], plain[0], plain[0]]
    out, stats = _both(DecodeOptions(), [(g.EN10MB, [TS + i for i in range(len(batch))], batch)])
    assert [(r.proto, len(r.payload)) for r in out] == [(17, len(SIP)), (132, 8), (17, 12 + 160),
                                                        (17, len(g.sip_invite("fr", pad=3000))),
                                                        (17, len(SIP)), (17, len(SIP))]
    assert [r.ts_ns - TS for r in out] == [0, 2, 3, 6, 7, 8]
    assert stats["error.ethernet_truncated"] == 1 and stats["frag.reassembled"] == 1


def test_large_batches_grow_the_columns() -> None:
    frames = [g.ethernet(g.udp4("192.0.2.1", "192.0.2.2", 10000 + i % 500, 20000, bytes(i % 50)), [i % 7])
              for i in range(9000)]
    frames[4500] = g.ethernet(g.gre(IPS["udp6"]))
    out, stats = _both(DecodeOptions(), [(g.EN10MB, list(range(9000)), frames)])
    assert len(out) == 9000 and stats["tunnel.gre"] == 1
    assert out[4500].ip_version == 6 and out[4501].sport == 10001


def test_many_addresses_keep_the_cache_bounded() -> None:
    frames = [g.ethernet(g.udp4(bytes([10, i >> 8 & 255, i & 255, 1]), "192.0.2.2", 5000, 6000, b"x"))
              for i in range(3000)]
    dec = Decoder(kernel="c")
    kmod_max = kmod._ADDR_CACHE_MAX
    try:
        kmod._ADDR_CACHE_MAX = 1000
        for start in range(0, 3000, 500):
            out = dec.decode_batch(g.EN10MB, [TS] * 500, frames[start : start + 500])
            assert [r.src[1:3] for r in out] == [bytes([i >> 8 & 255, i & 255]) for i in range(start, start + 500)]
            assert len(dec._kernel._addr) <= 1000 + 501
    finally:
        kmod._ADDR_CACHE_MAX = kmod_max


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Decoder(kernel="python").uses_kernel is False
    assert Decoder(kernel="c").uses_kernel is True
    monkeypatch.setenv("VMPROTO_DECODE_KERNEL", "python")
    assert Decoder().uses_kernel is False
    monkeypatch.setenv("VMPROTO_DECODE_KERNEL", "auto")
    assert Decoder().uses_kernel is True
    with pytest.raises(ValueError, match="decode kernel must be"):
        Decoder(kernel="fortran")


def test_without_a_compiler_the_decoder_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmod.LOADER, "_module", None)
    monkeypatch.setattr(kmod.LOADER, "_failure", "C packet decode kernel unavailable (no compiler); using pure Python")
    assert kmod.kernel_available() is False
    dec = Decoder()
    assert dec.uses_kernel is False
    (rec,) = dec.decode_batch(g.EN10MB, [TS], [g.ethernet(g.vxlan(IPS["udp4"]))])
    assert rec.tunnel == "vxlan"
    with pytest.raises(kmod.KernelUnavailable, match="no compiler"):
        Decoder(kernel="c")
    assert kmod.pcap_scanner() is None


def test_first_use_builds_into_the_cache_directory(tmp_path: Path) -> None:
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from vmproto.sensor.decode import Decoder\n"
            "print(Decoder().uses_kernel)\n")
    env = dict(os.environ, VMPROTO_KERNEL_CACHE=str(tmp_path), VMPROTO_DECODE_KERNEL="auto")
    root = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert run.stdout.strip() == "True"
    assert "building the C packet decode kernel into " + str(tmp_path) in run.stderr
    assert list(tmp_path.glob("*/_vmproto_decode_kernel*"))
    again = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                           timeout=60, check=True)
    assert again.stdout.strip() == "True" and "building" not in again.stderr
