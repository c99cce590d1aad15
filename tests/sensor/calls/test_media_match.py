"""Which call and direction an RTP packet belongs to: by destination, else by source (no ../shared needed)."""

from __future__ import annotations

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.testing.callgen import CallSpec, generate_call

CALLER, CALLEE, NOWHERE = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 20]), bytes(4)


def _run(packets: list) -> CdrRecord:
    an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060}), cleanup_calls_period=0))
    out = [r for p in packets for r in an.feed(p)] + an.finish()
    assert len(out) == 1
    return out[0]


def _one_address_media(packets: list) -> list:
    """Media as a device that records one address per stream sees it: the callee side is 0.0.0.0."""
    out = []
    for p in packets:
        if p.proto == 17 and 5060 not in (p.sport, p.dport):
            p = p._replace(dst=NOWHERE) if p.src == CALLER else p._replace(src=NOWHERE)
        out.append(p)
    return out


def test_stream_found_by_its_source_keeps_the_caller_direction() -> None:
    plain = _run(generate_call(CallSpec(seed=6)).packets)
    odd = _run(_one_address_media(generate_call(CallSpec(seed=6)).packets))
    assert odd.a is not None and odd.b is not None and plain.a is not None
    # caller -> 0.0.0.0:20000 matches no SDP destination, but its source is the caller's SDP address.
    assert odd.a.saddr == CALLER and odd.a.received == plain.a.received
    assert odd.b.saddr == NOWHERE
    rows = {r.saddr: r for r in odd.rtp}
    assert rows[CALLER].flags == plain.rtp[0].flags == 6  # a/b stream, caller
    assert rows[CALLER].sdp_ptime == 20                    # the sender's own SDP announced it
    assert rows[NOWHERE].sdp_ptime is None                 # 0.0.0.0:20000 announced nothing
