"""cdr.flags: generated calls, and the call the real sniffer analysed in the recorded pb scenario.

The recording (../shared/reference, read in place) carries the raw packets of one call inside the
packetbuffer blocks of pb_nocomp, and the cdr row the reference server stored for it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

from tests.conftest import REFERENCE, need_shared
from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.cdr import flags as F
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.sensor.decode.engine import Decoder
from vmproto.sensor.decode.options import DecodeOptions
from vmproto.testing.callgen import CallSpec, generate_call
from vmproto.wire.compression import PbCompression
from vmproto.wire.pbstore import decode_container, peek_header

CFG = AnalyzerConfig(sip_ports=frozenset({5060}), cleanup_calls_period=0)


def _analyse(packets: list, cfg: AnalyzerConfig = CFG) -> CdrRecord:
    an = CallAnalyzer(cfg)
    out = [r for p in packets for r in an.feed(p)] + an.finish()
    assert len(out) == 1
    return out[0]


def _sip_over_tcp(packets: list) -> list:
    """The same call with every SIP message carried in one TCP segment of its direction's stream."""
    seqs: dict[tuple[bytes, int], int] = {}
    out = []
    for p in packets:
        if 5060 in (p.sport, p.dport):
            seq = seqs.get((p.src, p.sport), 1000)
            seqs[(p.src, p.sport)] = seq + len(p.payload)
            p = p._replace(proto=6, tcp_seq=seq, tcp_flags=0x18)
        out.append(p)
    return out


def test_generated_call_flags() -> None:
    cdr = _analyse(generate_call(CallSpec(seed=1)).packets)
    assert cdr.flags == F.SAVE_FLAGS | F.SDP_MEDIA_AUDIO | F.PROTO_UDP
    cdr = _analyse(_sip_over_tcp(generate_call(CallSpec(seed=9)).packets))
    assert cdr.flags & (F.PROTO_TCP | F.PROTO_UDP) == F.PROTO_TCP
    saving = replace(CFG, cdr_save_flags=F.SAVE_SIP_PCAP | F.SAVE_RTP_PCAP)
    cdr = _analyse(generate_call(CallSpec(seed=1)).packets, saving)
    assert cdr.flags & F.SAVE_SIP_PCAP and cdr.flags & F.SAVE_RTP_PCAP


def _recorded_packets(scenario: str) -> list:
    transcript = need_shared(REFERENCE / "transcripts" / f"{scenario}.jsonl")
    decoder = Decoder(DecodeOptions())
    packets = []
    with transcript.open() as fh:
        for line in fh:
            m = json.loads(line)
            if not m.get("pcap_block_store"):
                continue
            plain = bytes.fromhex(m["plain_hex"])
            head = peek_header(plain)
            cont = decode_container(plain, PbCompression.SNAPPY if head.size_compress else None)
            for ts, us, _caplen, _len, _encaps, _ipoff, dlink, _vlan, _fl, data in cont.iter_packets():
                packets += decoder.decode_batch(dlink or head.dlink, [ts * 1_000_000_000 + us * 1000], [bytes(data)])
    return packets


def _recorded_cdr(scenario: str) -> dict[str, str]:
    with need_shared(REFERENCE / "cdr" / f"{scenario}.tsv").open(newline="") as fh:
        return {r["column"]: r["value"] for r in csv.DictReader(fh, delimiter="\t") if r["table"] == "cdr"
                and r["row"] == "0"}


def test_recorded_pb_call_flags_and_columns() -> None:
    cdr = _analyse(_recorded_packets("pb_nocomp"))
    ref = _recorded_cdr("pb_nocomp")
    # telephone-event in the INVITE and 200 SDP, audio media, SIP over UDP, plus the always-set SAVE_FLAGS.
    assert cdr.flags == int(ref["flags"]) == (F.TELEVENT_EXISTS_REQUEST | F.TELEVENT_EXISTS_RESPONSE
                                              | F.SDP_MEDIA_AUDIO | F.SAVE_FLAGS | F.PROTO_UDP)
    assert (cdr.duration, cdr.connect_duration, cdr.progress_time, cdr.first_rtp_time, cdr.bye) == (
        int(ref["duration"]), int(ref["connect_duration"]), int(ref["progress_time"]), int(ref["first_rtp_time"]),
        int(ref["bye"]))
    assert (cdr.caller, cdr.called, cdr.callername, cdr.last_sip_response_num) == (
        ref["caller"], ref["called"], ref["callername"], int(ref["lastSIPresponseNum"]))
    assert cdr.a is not None and cdr.b is not None
    assert (cdr.a.lost, cdr.a.mos_f1_min_mult10, cdr.a.rtp_ptime) == (
        int(ref["a_lost"]), int(ref["a_mos_f1_min_mult10"]), int(ref["a_rtp_ptime"]))
    # Not compared: a/b_received. The reference server stored 149 of the 150 packets each way here (and the
    # store client 148/147 for the same call): its RTP threads had not drained when the call was saved.
