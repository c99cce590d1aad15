"""The packet engine over the shared VoIP corpus (read in place; skipped without ../shared)."""

from __future__ import annotations

import csv
from pathlib import Path

import dpkt
import pytest

from tests.conftest import CORPUS, need_shared
from vmproto.sensor.capture import CaptureFileReader
from vmproto.sensor.decode import DecodedPacket, DecodeOptions, Decoder

SIP_STARTS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ", b"UPDATE ",
              b"NOTIFY ", b"SUBSCRIBE ", b"INFO ", b"MESSAGE ", b"REFER ", b"PUBLISH ", b"SIP/2.0 ")
ALL_ON = DecodeOptions(audiocodes=True, hep=True, ipfix=True)


def _index() -> list[dict[str, str]]:
    path = CORPUS / "INDEX.tsv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _decode(path: Path, options: DecodeOptions = ALL_ON) -> tuple[list[DecodedPacket], Decoder, int]:
    dec = Decoder(options)
    out: list[DecodedPacket] = []
    frames = 0
    with CaptureFileReader(need_shared(path)) as reader:
        for b in reader:
            frames += len(b.frames)
            out += dec.decode_batch(b.linktype, b.ts_ns, b.frames)
    return out, dec, frames


def _is_sip(payload: bytes) -> bool:
    return payload.startswith(SIP_STARTS)


NAMES = [r["name"] for r in _index()] or ["corpus-missing"]


@pytest.mark.parametrize("name", NAMES)
def test_every_capture_decodes_with_sane_counters(name: str) -> None:
    row = {r["name"]: r for r in _index()}.get(name)
    if row is None:
        need_shared(CORPUS / "INDEX.tsv")
    records, dec, frames = _decode(CORPUS / row["pcap"])
    st = dec.stats
    assert st.get("frames") == frames
    assert st.get("records") == len(records) > 0
    if name.startswith("gen_"):
        # Our own generator writes no malformed packets and no tunnel we cannot take apart.
        assert st.total("error") == 0, st
        assert st.total("unknown_tunnel") == 0, st
    for r in records:
        assert r.ip_version in (4, 6) and len(r.src) == len(r.dst) == (4 if r.ip_version == 4 else 16)
        assert r.proto in (6, 17, 132)
        assert r.ip_packet[0] >> 4 == r.ip_version
        assert r.payload in r.ip_packet or r.tunnel in ("hep", "ipfix", "audiocodes")


def _twins() -> list[str]:
    return sorted(r["name"] for r in _index() if r["name"].startswith("gen_base_") and r["name"] != "gen_base_eth")


@pytest.mark.parametrize("name", _twins() or ["corpus-missing"])
def test_tunnel_twin_gives_the_plain_packets(name: str) -> None:
    need_shared(CORPUS / "INDEX.tsv")
    plain, _, _ = _decode(CORPUS / "pcaps" / "gen_base_eth.pcap")
    tun, dec, _ = _decode(CORPUS / "pcaps" / f"{name}.pcap")
    if name == "gen_base_ipfix":
        # Signalling only; the SBC reports times in µs, like the plain capture.
        sip = [p for p in plain if _is_sip(p.payload)]
        assert [(r.ts_ns, r.src, r.dst, r.sport, r.dport, r.payload) for r in tun if r.tunnel == "ipfix"] == [
            (p.ts_ns, p.src, p.dst, p.sport, p.dport, p.payload) for p in sip]
        return
    assert len(tun) == len(plain)
    if name == "gen_base_audiocodes":
        for p, t in zip(plain, tun, strict=True):
            assert (t.ts_ns, t.sport, t.dport, t.payload, t.tunnel) == (p.ts_ns, p.sport, p.dport, p.payload,
                                                                       "audiocodes")
            if _is_sip(p.payload):
                assert t.ip_packet == p.ip_packet  # signalling carries the whole IP packet
            else:
                # Media: only the network side is known; the device side is 0.0.0.0 (as in the reference).
                assert {t.src, t.dst} - {b"\0\0\0\0"} <= {p.src, p.dst}
                assert b"\0\0\0\0" in (t.src, t.dst)
        return
    if name == "gen_base_hep3":
        assert [r[:8] for r in tun] == [p[:8] for p in plain]
        assert {r.tunnel for r in tun} == {"hep"}
        return
    assert [(r.ts_ns, r.ip_packet) for r in tun] == [(p.ts_ns, p.ip_packet) for p in plain]
    assert [r.payload for r in tun] == [p.payload for p in plain]
    expected_tunnel = {"gen_base_vlan": "", "gen_base_sll": "", "gen_base_raw": ""}.get(name)
    if expected_tunnel is not None:
        assert {r.tunnel for r in tun} == {expected_tunnel}
    else:
        assert "" not in {r.tunnel for r in tun}
    if name == "gen_base_vlan":
        assert {r.vlan for r in tun} == {100}


def test_reference_behaviour_is_opt_in() -> None:
    """With the reference's defaults HEP and AudioCodes stay plain UDP, IPFIX plain TCP."""
    need_shared(CORPUS / "INDEX.tsv")
    for name in ("gen_base_hep3", "gen_base_audiocodes", "gen_base_ipfix"):
        recs, dec, frames = _decode(CORPUS / "pcaps" / f"{name}.pcap", DecodeOptions())
        assert len(recs) == frames
        assert {r.tunnel for r in recs} == {""}
        assert not any(_is_sip(r.payload) for r in recs)


def _dpkt_sip_count(path: Path) -> int:
    """Independent count of SIP messages (UDP datagrams / TCP segments starting a SIP message)."""
    n = 0
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        dlt = reader.datalink()
        for _ts, buf in reader:
            if dlt == dpkt.pcap.DLT_EN10MB:
                ip = dpkt.ethernet.Ethernet(buf).data
            elif dlt == dpkt.pcap.DLT_LINUX_SLL:
                ip = dpkt.sll.SLL(buf).data
            elif dlt in (dpkt.pcap.DLT_RAW, 101):
                ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
            elif dlt == dpkt.pcap.DLT_NULL:
                ip = dpkt.loopback.Loopback(buf).data
            else:
                raise AssertionError(f"link type {dlt} not covered by this test")
            l4 = getattr(ip, "data", None)
            if isinstance(l4, dpkt.udp.UDP | dpkt.tcp.TCP) and _is_sip(bytes(l4.data)):
                n += 1
            elif isinstance(l4, dpkt.sctp.SCTP):
                n += sum(1 for c in l4.chunks if c.type == 0 and _is_sip(bytes(c.data)[12:]))
    return n


@pytest.mark.parametrize("name", sorted(n for n in NAMES if n.startswith("pub_") and "pcapng" not in
                                        {r["name"]: r["pcap"] for r in _index()}.get(n, "")) or ["corpus-missing"])
def test_public_capture_sip_count_matches_dpkt(name: str) -> None:
    path = need_shared(CORPUS / "pcaps" / f"{name}.pcap")
    records, _, _ = _decode(path)
    ours = sum(1 for r in records if _is_sip(r.payload))
    assert ours == _dpkt_sip_count(path) > 0


def test_public_tunnelled_captures() -> None:
    need_shared(CORPUS / "INDEX.tsv")
    recs, dec, frames = _decode(CORPUS / "pcaps" / "pub_heplify_gre_teb_sip.pcapng")
    assert len(recs) == frames == dec.stats.get("tunnel.gre")
    assert all(_is_sip(r.payload) and r.tunnel == "gre" and 5260 in (r.sport, r.dport) for r in recs)
    # HEP with compressed payload chunks (the reference ignores them).
    recs, dec, frames = _decode(CORPUS / "pcaps" / "pub_hepws_hep3_compressed.pcapng")
    assert len(recs) == frames and all(_is_sip(r.payload) and r.tunnel == "hep" for r in recs)
    assert len({r.ts_ns for r in recs}) > 1
