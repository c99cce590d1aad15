"""Call analysis on generated calls (no ../shared needed): known impairments give known statistics."""

from __future__ import annotations

import math

import pytest

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.testing.callgen import CallSpec, generate_call


def _run(spec: CallSpec) -> tuple[CdrRecord, object]:
    gen = generate_call(spec)
    an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060})))
    out = []
    for p in gen.packets:
        out += an.feed(p)
    out += an.finish()
    assert len(out) == 1
    return out[0], gen


def test_clean_call() -> None:
    cdr, gen = _run(CallSpec(seed=1))
    assert (cdr.last_sip_response_num, cdr.last_sip_response, cdr.bye, cdr.whohanged) == (200, "200 OK", 3, 1)
    assert (cdr.caller, cdr.called, cdr.callername, cdr.a_ua) == ("1000", "2000", "Alice", "callgen")
    assert cdr.a is not None and cdr.b is not None
    assert cdr.a.received == gen.sent["a"] == 150 and cdr.b.received == 150
    assert (cdr.a.lost, cdr.a.avgjitter_mult10, cdr.a.maxjitter, cdr.a.mos_f1_min_mult10) == (0, 0, 0, 45)
    assert cdr.a.rtp_ptime == 20 and cdr.payload == 0
    assert [r.flags for r in cdr.rtp] == [6, 10]
    assert cdr.connect_duration == 3 and cdr.progress_time == 0 and cdr.first_rtp_time == 1


@pytest.mark.parametrize("seed", [3, 5, 8])
def test_known_loss(seed: int) -> None:
    cdr, gen = _run(CallSpec(seed=seed, loss=0.03, rtp_seconds=5))
    for side, stats in (("a", cdr.a), ("b", cdr.b)):
        assert stats is not None
        assert stats.lost == gen.lost[side]
        assert stats.received == gen.sent[side] - gen.lost[side]
        seqs = sorted(gen.lost_seqs[side])
        bursts: list[int] = []
        for i, s in enumerate(seqs):
            if i and s == seqs[i - 1] + 1:
                bursts[-1] += 1
            else:
                bursts.append(1)
        assert stats.sl[0] == bursts.count(1)
        assert sum(stats.sl) == len(bursts)
        assert stats.packet_loss_perc_mult1000 == round(gen.lost[side] / gen.sent[side] * 100_000)


def test_known_jitter_matches_rfc3550_estimator() -> None:
    spec = CallSpec(seed=11, jitter_ms=8)
    cdr, gen = _run(spec)
    times = [p.ts_ns / 1e6 for p in gen.packets if p.proto == 17 and p.sport == 10000]
    js, j = [], 0.0
    for prev, cur in zip(times[2:], times[3:], strict=False):
        j += (abs((cur - prev) - 20.0) - j) / 16
        js.append(j)
    avg = sum(js) / (len(js) + 1)  # the first counted packet contributes a zero, as in the reference
    assert cdr.a is not None
    assert cdr.a.avgjitter_mult10 == math.ceil(avg * 10)
    assert cdr.a.maxjitter == math.ceil(max(js))
    assert cdr.rtp[0].maxjitter_mult10 == int(max(js) * 10)


def test_reordering_counted() -> None:
    cdr, gen = _run(CallSpec(seed=4, reorder=0.05, rtp_seconds=5))
    assert cdr.a is not None and gen.reordered["a"] > 0
    assert cdr.a.reordered == gen.reordered["a"]
    assert cdr.a.lost == 0


def test_busy_and_cancel() -> None:
    busy, _ = _run(CallSpec(outcome="busy"))
    assert (busy.last_sip_response_num, busy.bye, busy.connect_duration, busy.a, busy.rtp) == (486, 0, None, None, [])
    cancel, _ = _run(CallSpec(outcome="cancel"))
    # The CANCEL first records "487 Request Terminated CANCEL"; the callee's own 487 may replace it (48x rule).
    assert (cancel.last_sip_response_num, cancel.last_sip_response) == (487, "487 Request Terminated")
    assert cancel.bye == 0 and cancel.connect_duration is None


def test_reinvite_opens_new_streams() -> None:
    cdr, _ = _run(CallSpec(reinvite=True, rtp_seconds=6, seed=7))
    assert [(r.sport, r.dport, r.flags) for r in cdr.rtp] == [
        (10000, 20000, 6), (20000, 10000, 10), (10100, 20000, 4), (20000, 10100, 8)]
    assert all(r.received == 150 for r in cdr.rtp)


def test_bad_spec_rejected() -> None:
    with pytest.raises(ValueError):
        CallSpec(outcome="nope")
