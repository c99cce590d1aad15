"""Call closing after the reference's destroy timers and timeouts, and RTP ignored after BYE 200 / 403.

Every case is a generated call plus "tick" packets (unrelated UDP) that move capture time on, so the test
sees exactly when `feed` returns the CDR.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.testing.callgen import CallSpec, GenPacket, generate_call

S = 1_000_000_000
BASE = AnalyzerConfig(sip_ports=frozenset({5060}), cleanup_calls_period=1)


def _tick(template: GenPacket, ts_ns: int) -> GenPacket:
    return template._replace(ts_ns=ts_ns, src=b"\xcb\x00\x71\x63", dst=b"\xcb\x00\x71\x64", sport=9, dport=9,
                             payload=b"tick")


def _rtp_like(template: GenPacket, ts_ns: int, seq: int, *, from_callee: bool = True) -> GenPacket:
    """One PCMU packet between the callgen RTP ports (callee 20000 -> caller 10000 by default)."""
    payload = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x7777) + bytes(160)
    src, dst = (b"\xc6\x33\x64\x14", b"\xc0\x00\x02\x0a") if from_callee else (b"\xc0\x00\x02\x0a", b"\xc6\x33\x64\x14")
    sport, dport = (20000, 10000) if from_callee else (10000, 20000)
    return template._replace(ts_ns=ts_ns, src=src, dst=dst, sport=sport, dport=dport, payload=payload)


def _feed(an: CallAnalyzer, packets: list[GenPacket]) -> list[tuple[int, CdrRecord]]:
    """Feed packets; return (index of the packet whose feed returned it, CDR) for every CDR."""
    out = []
    for i, p in enumerate(packets):
        out += [(i, r) for r in an.feed(p)]
    return out


def _sip_index(packets: list[GenPacket], start: bytes) -> int:
    return next(i for i, p in enumerate(packets) if p.payload.startswith(start))


def test_closed_five_seconds_after_bye_ok() -> None:
    pk = generate_call(CallSpec(seed=2)).packets
    ok = pk[-1].ts_ns
    ticks = [_tick(pk[0], ok + 4 * S), _tick(pk[0], ok + 6 * S)]
    got = _feed(CallAnalyzer(BASE), pk + ticks)
    assert [(i, r.bye) for i, r in got] == [(len(pk) + 1, 3)]


def test_quick_save_cdr_closes_after_one_second() -> None:
    pk = generate_call(CallSpec(seed=2)).packets
    ok = pk[-1].ts_ns
    got = _feed(CallAnalyzer(replace(BASE, quick_save_cdr=1)), pk + [_tick(pk[0], ok + 2 * S)])
    assert [(i, r.bye) for i, r in got] == [(len(pk), 3)]


@pytest.mark.parametrize(("ignore", "extra"), [(True, 0), (False, 1)])
def test_rtp_after_bye_ok(ignore: bool, extra: int) -> None:
    pk = generate_call(CallSpec(seed=2)).packets
    late = _rtp_like(pk[0], pk[-1].ts_ns + 1_000_000, 65000, from_callee=False)
    an = CallAnalyzer(replace(BASE, ignore_rtp_after_bye_confirmed=ignore))
    base = CallAnalyzer(BASE)
    (cdr,) = [r for _, r in _feed(an, [*pk, late])] + an.finish()
    (ref,) = [r for _, r in _feed(base, pk)] + base.finish()
    assert len(cdr.rtp) == len(ref.rtp) + extra


def test_final_response_closes_after_response_default_timeout() -> None:
    pk = generate_call(CallSpec(seed=4, outcome="busy")).packets
    t486 = pk[_sip_index(pk, b"SIP/2.0 486")].ts_ns
    ticks = [_tick(pk[0], t486 + 4 * S), _tick(pk[0], t486 + 6 * S)]
    got = _feed(CallAnalyzer(BASE), pk + ticks)
    assert [(i, r.bye, r.last_sip_response_num) for i, r in got] == [(len(pk) + 1, 0, 486)]
    got = _feed(CallAnalyzer(replace(BASE, response_default_timeout=30)), pk + ticks)
    assert got == []


def test_rtp_after_403_is_ignored() -> None:
    pk = generate_call(CallSpec(seed=4, outcome="busy")).packets
    i = _sip_index(pk, b"SIP/2.0 486")
    pk[i] = pk[i]._replace(payload=pk[i].payload.replace(b"486 Busy Here", b"403 Forbidden"))
    t = pk[i].ts_ns
    rtp = [_rtp_like(pk[0], t + k * 20_000_000, 100 + k) for k in range(1, 20)]
    for ignore, streams in ((True, 0), (False, 1)):
        an = CallAnalyzer(replace(BASE, ignore_rtp_after_auth_failed=ignore))
        (cdr,) = [r for _, r in _feed(an, pk + rtp)] + an.finish()
        assert cdr.last_sip_response_num == 403
        assert len(cdr.rtp) == streams


def test_rtp_timeout() -> None:
    pk = generate_call(CallSpec(seed=2)).packets[:-2]  # no BYE / 200
    last = pk[-1].ts_ns
    got = _feed(CallAnalyzer(BASE), pk + [_tick(pk[0], last + 300 * S), _tick(pk[0], last + 302 * S)])
    assert [(i, r.bye) for i, r in got] == [(len(pk) + 1, 104)]


def test_sip_without_rtp_and_zombie() -> None:
    pk = generate_call(CallSpec(seed=4, outcome="busy")).packets
    ringing = pk[: _sip_index(pk, b"SIP/2.0 486")]  # INVITE, 100, 180: no final answer, no RTP
    t0 = pk[0].ts_ns
    got = _feed(CallAnalyzer(BASE), ringing + [_tick(pk[0], t0 + 400 * S), _tick(pk[0], t0 + 3602 * S)])
    assert [(i, r.bye) for i, r in got] == [(len(ringing) + 1, 108)]
    invite_only = pk[:1]  # no 18x, no 2xx, no RTP: a zombie after 300 s
    got = _feed(CallAnalyzer(BASE), invite_only + [_tick(pk[0], t0 + 299 * S), _tick(pk[0], t0 + 302 * S)])
    assert [(i, r.bye) for i, r in got] == [(2, 107)]


def test_absolute_timeout_and_bye_timeout() -> None:
    pk = generate_call(CallSpec(seed=2, rtp_seconds=6)).packets
    got = _feed(CallAnalyzer(replace(BASE, absolute_timeout=3)), pk)
    assert [r.bye for _, r in got] == [102]
    no_ok = pk[:-1]  # BYE never answered
    bye_t = no_ok[-1].ts_ns
    ticks = [_tick(pk[0], bye_t + 29 * S), _tick(pk[0], bye_t + 31 * S)]
    got = _feed(CallAnalyzer(replace(BASE, bye_timeout=30)), no_ok + ticks)
    assert [(i, r.bye) for i, r in got] == [(len(no_ok) + 1, 103)]
    # With the default bye_timeout the 60 s destroy timer of the BYE closes it with the normal code (2).
    got = _feed(CallAnalyzer(BASE), no_ok + [_tick(pk[0], bye_t + 61 * S)])
    assert [(i, r.bye) for i, r in got] == [(len(no_ok), 2)]


def test_cleanup_period() -> None:
    """Deadlines are checked once per cleanup period of capture time; period 0 never checks before the end."""
    pk = generate_call(CallSpec(seed=2)).packets
    ok = pk[-1].ts_ns
    ticks = [_tick(pk[0], ok + k * S) for k in range(6, 30)]
    default = _feed(CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060}))), pk + ticks)
    assert len(default) == 1
    # The first packet runs a sweep; the next ones come 10, 20 ... s later.
    closed_at = ticks[default[0][0] - len(pk)].ts_ns
    assert (closed_at - pk[0].ts_ns) // S % 10 == 0
    assert _feed(CallAnalyzer(replace(BASE, cleanup_calls_period=0)), pk + ticks) == []


@pytest.mark.parametrize("ignore", [True, False])
def test_call_ends_at_bye_ok(ignore: bool) -> None:
    """A retransmitted 200 to BYE 3 s later does not lengthen the call (ignore_duration_after_bye_confirmed)."""
    pk = generate_call(CallSpec(seed=2)).packets
    again = pk[-1]._replace(ts_ns=pk[-1].ts_ns + 3 * S)
    an = CallAnalyzer(replace(BASE, cleanup_calls_period=0, ignore_duration_after_bye_confirmed=ignore))
    (cdr,) = [r for _, r in _feed(an, [*pk, again])] + an.finish()
    assert cdr.callend_us == (pk[-1].ts_ns if ignore else again.ts_ns) // 1000


@pytest.mark.parametrize(("field", "value"), [("rtptimeout", -1), ("quick_save_cdr", 3), ("cleanup_calls_period", -5),
                                              ("rtp_kernel", "gpu"), ("sip_ports", frozenset({0})),
                                              ("bye_timeout", "60"), ("cdr_save_flags", -1)])
def test_bad_options_are_named(field: str, value: object) -> None:
    from vmproto.sensor.calls import AnalyzerConfigError

    with pytest.raises(AnalyzerConfigError, match=field):
        replace(BASE, **{field: value})


def test_advance_runs_the_timers_without_packets():
    """A quiet source: after the call's BYE/200 no packet arrives. The call must still close once the clock moves
    (the central advances it by wall-clock time for idle mirroring sensors)."""
    from vmproto.sensor.calls import CallAnalyzer
    from vmproto.testing.callgen import CallSpec, generate_call

    call = generate_call(CallSpec(seed=5, call_id="advance-1@192.0.2.10"))
    analyzer = CallAnalyzer()
    closed = []
    for pkt in call.packets:
        closed += analyzer.feed(pkt)
    assert closed == [] and analyzer.open_calls == 1
    last = call.packets[-1].ts_ns
    assert analyzer.advance(last - 1_000_000_000) == []  # going back in time changes nothing
    assert analyzer.advance(last + 1_000_000_000) == []  # BYE confirmed: the call lingers a few seconds
    cdrs = analyzer.advance(last + 30 * 1_000_000_000)
    assert [c.fbasename for c in cdrs] == ["advance-1@192.0.2.10"] and analyzer.open_calls == 0
