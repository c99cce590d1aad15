"""The analyzer's per-call hooks: every attributed packet once with its kind, the final CDR once per call."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.calls.call import Call, filename_from_call_id
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.testing.callgen import CallSpec, GenPacket, generate_call


def _kind_of(p: GenPacket, spec: CallSpec) -> str | None:
    if 5060 in (p.sport, p.dport):
        return "sip"
    if {p.sport, p.dport} & {spec.caller_rtp_port, spec.callee_rtp_port}:
        return "rtp"
    return None


def test_hooks_see_every_packet_and_one_cdr() -> None:
    spec = CallSpec(call_id="a b/c;d@[2001:db8::1]", seed=2, rtp_seconds=1)
    gen = generate_call(spec)
    seen: list[tuple[str, int, str]] = []
    closed: list[tuple[Call, CdrRecord]] = []
    an = CallAnalyzer(AnalyzerConfig(), on_call_packet=lambda c, p, k: seen.append((c.call_id, p.ts_ns, k)),
                      on_call_closed=lambda c, r: closed.append((c, r)))
    # A stray packet to an unrelated port is not attributed to the call.
    stray = replace_packet(gen.packets[-1], dport=40000, sport=40001)
    out = []
    for p in [*gen.packets, stray]:
        out += an.feed(p)
    assert closed == []
    out += an.finish()
    assert len(out) == 1 and len(closed) == 1 and closed[0][1] is out[0]
    call = closed[0][0]
    assert call.call_id == spec.call_id
    assert call.fbasename == "a_b_c_d@_2001:db8::1_"
    assert call.calldate == gen.packets[0].ts_ns // 1000 * 1000
    expected = [(spec.call_id, p.ts_ns, _kind_of(p, spec)) for p in gen.packets]
    assert seen == expected
    assert {k for _, _, k in seen} == {"sip", "rtp"}
    assert sum(k == "rtp" for _, _, k in seen) == gen.sent["a"] + gen.sent["b"]


def replace_packet(p: GenPacket, **kw: int) -> GenPacket:
    return p._replace(**kw)


def test_rtcp_reported_as_rtcp() -> None:
    spec = CallSpec(seed=3, rtp_seconds=0.2)
    gen = generate_call(spec)
    kinds: list[str] = []
    an = CallAnalyzer(on_call_packet=lambda c, p, k: kinds.append(k))
    rtcp = bytes([0x80, 200, 0, 6]) + bytes(24)  # an empty sender report
    bye = len(gen.packets) - 2
    first_rtp = next(p for p in gen.packets if p.dport == spec.callee_rtp_port)
    packets = list(gen.packets)
    packets.insert(bye, first_rtp._replace(dport=spec.callee_rtp_port + 1, payload=rtcp))
    packets.insert(bye, first_rtp._replace(payload=rtcp))  # multiplexed on the RTP port
    for p in packets:
        an.feed(p)
    an.finish()
    assert kinds.count("rtcp") == 2


def test_terminate_reports_closed_calls() -> None:
    closed: list[int] = []
    an = CallAnalyzer(on_call_closed=lambda c, r: closed.append(r.bye))
    for i in range(3):
        for p in generate_call(replace(CallSpec(seed=i, call_id=f"c{i}", rtp_seconds=0.1))).packets[:3]:
            an.feed(p)
    an.terminate()
    assert closed == [110, 110, 110]


@pytest.mark.parametrize(("call_id", "name"), [
    ("abc-123.x@host:5060", "abc-123.x@host:5060"),
    ("a/b\\c d\te", "a_b_c_d_e"),
    ("é", "__"),  # one underscore per UTF-8 byte, as the reference works on bytes
    ("x" * 300, "x" * 255),
])
def test_filename_from_call_id(call_id: str, name: str) -> None:
    assert filename_from_call_id(call_id) == name
    assert filename_from_call_id("a:b", convert_chars=":") == "a_b"
