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


class _NoCache(dict):
    """A fast-path cache that never keeps anything: every RTP packet takes the full lookup."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


def test_fast_path_cache_changes_nothing() -> None:
    """Overlapping calls that reuse the same RTP ports (later SDP takes the port over, calls close while
    others run) give the same CDRs with the fast-path cache as with a full lookup for every packet."""
    import heapq

    calls = [generate_call(CallSpec(call_id=f"reuse-{i}@192.0.2.10", seed=20 + i, start_s=1_763_632_800.0 + i * 1.5,
                                    loss=0.02, rtp_seconds=3.0, reinvite=i == 1)).packets for i in range(4)]
    calls[-1] = calls[-1][:-2]  # the last call never hangs up: it ends on rtptimeout
    packets = list(heapq.merge(*calls, key=lambda p: p.ts_ns))
    # Late media 20 s after the last call closed: it belongs to no call any more.
    late_rtp = next(p for p in reversed(calls[-1]) if p.dport == 20000)
    end = packets[-1].ts_ns
    packets.append(late_rtp._replace(ts_ns=end + 10 * 10**9, src=b"\xcb\x00\x71\x02", dst=b"\xcb\x00\x71\x01",
                                     sport=9, dport=9))  # an unrelated packet: the sweep closes the last call
    packets.append(late_rtp._replace(ts_ns=end + 20 * 10**9))
    results, reported = [], []
    for cache in (None, _NoCache()):
        seen: list[tuple[str, str, int]] = []
        an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060}), cleanup_calls_period=1, rtptimeout=5),
                          on_call_packet=lambda c, p, kind, seen=seen: seen.append((c.call_id, kind, p.ts_ns)))
        if cache is not None:
            an._hot = cache
        results.append([r for p in packets for r in an.feed(p)] + an.finish())
        reported.append(seen)
    assert results[0] == results[1]
    assert reported[0] == reported[1]
    assert len(results[0]) == 4 and all(r.a is not None for r in results[0])
    assert results[0][-1].bye == 104
    assert packets[-1].ts_ns not in {ts for _, _, ts in reported[0]}  # the closed call no longer owns it
