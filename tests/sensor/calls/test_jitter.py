"""The simulated receivers behind MOS F1/F2/adaptive, checked against traces derived by hand.

Derivation (F1: fixed 50 ms delay, resync threshold 100 ms; 20 ms frames, packet i sent at 20*i ms with
RTP time 20*i ms, times relative to the first packet):

* Packet 0 creates the buffer: rxcore = 0, next playout 50, frame 0 due at 0 + 50 + 0 = 50. Frame i is due
  at 50 + 20*i.
* The playout clock L starts at 0 and only moves when a packet arrives at least one ptime after L + ptime:
  packet 1 (t=20) gives msdiff 0; packet k >= 2 (t=20k) gives msdiff 20, so exactly one playout step runs
  at now = L = 20(k-2), then L = 20(k-1). So frame m (due 50+20m) is played by the step at now = 60 + 20m,
  i.e. when packet m+5 arrives, and the next playout time becomes 70 + 20m.
* Packet j arriving 70 ms late (t = 20j+70, between packets j+3 and j+4): L = 20(j+2), msdiff 10, no step.
  The last step (now = 20(j+1)) played frame j-2, so next playout is 20j+30 <= due 20j+50: not late; it
  fits between frame j-1 (due 20j+30) and j+1 (due 20j+70). F1 loses nothing.
* Packet j never arriving: the step at now = 20j+60 finds frame j+1 (due 20j+70) at the head, too early:
  one concealed frame (burst 1). The next step plays frame j+1; its sequence number jumps by 2, so the
  burst is counted: loss[1] = 1. F2 (200 ms) and the adaptive buffer conceal the same single frame.
"""

from __future__ import annotations

from vmproto.sensor.calls.jitter import AdaptiveBuffer, PlayoutChannel, new_mos_channels

T0 = 1_000_000_000


def _play(ch: PlayoutChannel, arrivals: list[tuple[int, int]], n: int) -> None:
    """arrivals: (index, arrival ms) in arrival order; frame i has RTP time 20*i ms and sequence 1000+i."""
    prev_seq = -1
    prev_ts = 0
    for k, (i, t) in enumerate(arrivals):
        ch.packet(T0 + t * 1000, 20 * i, prev_ts, 1000 + i, prev_seq, k == 0, True, 20)
        prev_seq, prev_ts = 1000 + i, 20 * i


def _timeline(n: int, late: dict[int, int] | None = None, lost: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
    late = late or {}
    out = [(i, 20 * i + late.get(i, 0)) for i in range(n) if i not in lost]
    return sorted(out, key=lambda x: x[1])


def test_on_time_stream_loses_nothing() -> None:
    for ch in new_mos_channels():
        _play(ch, _timeline(500), 500)
        assert sum(ch.loss) == 0 and ch.burst == 0


def test_f1_absorbs_70ms_late_packet() -> None:
    f1, _, _ = new_mos_channels()
    _play(f1, _timeline(300, late={100: 70}), 300)
    assert sum(f1.loss) == 0


def test_single_missing_packet_is_one_burst_of_one_everywhere() -> None:
    for ch in new_mos_channels():
        _play(ch, _timeline(300, lost=frozenset({100})), 300)
        assert ch.loss[1] == 1 and sum(ch.loss) == 1, ch.loss[:5]


def test_fixed_buffers_differ_on_late_packets() -> None:
    # Every 25th packet 150 ms late: beyond F1's 50 ms (plus its one-step clock lag), inside F2's 200 ms.
    late = {i: 150 for i in range(50, 1000, 25)}
    f1, f2, _ = new_mos_channels()
    _play(f1, _timeline(1000, late=late), 1000)
    _play(f2, _timeline(1000, late=late), 1000)
    assert sum(f2.loss) == 0
    assert sum(f1.loss) > 0


def test_adaptive_history_percentile() -> None:
    jb = AdaptiveBuffer()
    # 100 delays 0..99: index = 100*3//100 = 3, so min = sorted[3] = 3 and max = sorted[96] = 96: jitter 93.
    for d in range(100):
        jb._history_put(1000 + 20 * (d + 1), 1000 + 20 * (d + 1) + d)  # frames_in stays 0: resync each time
        jb.frames_in = 1
    # The first put resynchronised (delay 0); the others are d - 0 relative to it.
    jb._history_get()
    assert (jb.min, jb.jitter) == (3, 93)


def test_cdr_mos_models_differ_under_heavy_jitter() -> None:
    """End to end: with up to 150 ms capture jitter only the 50 ms receiver drops frames, so MOS F1 falls
    below 4.5 while F2 (200 ms) and the adaptive buffer stay at 4.5; sequence loss is the same for all."""
    from vmproto.sensor.calls import CallAnalyzer
    from vmproto.testing.callgen import CallSpec, generate_call

    an = CallAnalyzer()
    out = []
    for p in generate_call(CallSpec(seed=5, jitter_ms=150, rtp_seconds=25)).packets:
        out += an.feed(p)
    out += an.finish()
    a = out[0].a
    assert a is not None
    assert a.mos_f1_min_mult10 is not None and a.mos_f1_min_mult10 < 45
    assert (a.mos_f2_min_mult10, a.mos_adapt_min_mult10) == (45, 45)
