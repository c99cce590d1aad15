"""Full call analysis throughput (packets/s, single core) on an RTP-heavy generated capture.

    python bench/analysis.py [--quick] [--calls N] [--seconds S]

Generates N overlapping answered calls (PCMU, 1 % loss, 8 ms capture jitter), merges them in capture order
and times CallAnalyzer.feed/finish over all packets. `--quick` keeps the run under 10 s.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import time

from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.testing.callgen import CallSpec, generate_call


def build(calls: int, seconds: float) -> list:
    streams = []
    for i in range(calls):
        spec = CallSpec(call_id=f"bench-{i}@192.0.2.10", seed=i, loss=0.01, jitter_ms=8, rtp_seconds=seconds,
                        start_s=1_763_632_800.0 + i * 0.1, caller_rtp_port=10000 + 2 * i,
                        callee_rtp_port=20000 + 2 * i)
        streams.append(generate_call(spec).packets)
    return list(heapq.merge(*streams, key=lambda p: p.ts_ns))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (< 10 s)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    calls, seconds = (20, 10.0) if args.quick else (args.calls, args.seconds)
    packets = build(calls, seconds)
    # The capture is held in memory only to time the analysis alone; a sensor streams its packets. Keep the
    # collector from walking these hundreds of thousands of objects during the timed loop.
    gc.collect()
    gc.freeze()
    an = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060})))
    feed = an.feed
    t0, c0 = time.perf_counter(), time.process_time()
    cdrs = 0
    for p in packets:
        cdrs += len(feed(p))
    cdrs += len(an.finish())
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU time is the figure to compare on a shared machine; wall time also counts waiting for a core.
    print(f"packets={len(packets)} calls={calls} cdrs={cdrs} kernel={an.rtp_kernel} wall_s={dt:.3f} cpu_s={cpu:.3f} "
          f"packets_per_s={len(packets) / cpu:,.0f} (wall {len(packets) / dt:,.0f})")


if __name__ == "__main__":
    main()
