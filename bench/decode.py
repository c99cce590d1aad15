"""Packet engine throughput: read + decode + tunnel stripping from a pcap, single core.

    .venv/bin/python bench/decode.py              # 1,000,000 packets per scenario, 3 runs each
    .venv/bin/python bench/decode.py --quick      # 100,000 packets, plain/gre/vxlan
    .venv/bin/python bench/decode.py --repeat 7   # more runs: report the best and the median
    .venv/bin/python bench/decode.py --profile    # plus the top of a cProfile of the plain scenario
    (common options: --json-only, --out PATH; results go to bench/results/<date>-decode.json)

Captures are generated with vmproto.testing.pcapgen (RTP-heavy: 50 G.711 streams, one SIP INVITE per 1000
packets) into a temporary directory. Read + decode runs through both decoder paths: "c" (the cffi kernel,
with the reader handing out FrameList batches over its read chunks) and "python" (the pure-Python
reference; the reader walks records in Python). Rates are packets per wall-clock second and per CPU second
of this process (the second is steadier on a machine shared with other work). Readers compared for
read-only: our reader, libpcap pcap_dispatch with a cffi callback, and a libpcap pcap_next_ex loop; libpcap's
dispatch rate is recorded as this machine's read limit and our readers as ratios to it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRun, bench_parser  # noqa: E402
from vmproto.sensor.capture import CaptureFileReader, libpcap  # noqa: E402
from vmproto.sensor.decode import Decoder  # noqa: E402
from vmproto.testing import pcapgen as g  # noqa: E402

SCENARIOS = {
    "plain": lambda ip: g.ethernet(ip),
    "vlan": lambda ip: g.ethernet(ip, [100]),
    "gre": lambda ip: g.ethernet(g.gre(ip)),
    "vxlan": lambda ip: g.ethernet(g.vxlan(ip)),
    "erspan2": lambda ip: g.ethernet(g.erspan2(ip)),
}


def make_capture(path: Path, n: int, wrap) -> None:
    # Build a few thousand distinct packets and cycle them: realistic sizes and ports without spending
    # minutes in the generator's pure-Python checksums.
    unique = g.rtp_call_packets(min(n, 5000))
    frames = [wrap(ip) for _ts, ip in unique]
    start = unique[0][0]
    g.write_pcap(path, g.EN10MB, ((start + i * 400_000, frames[i % len(frames)]) for i in range(n)))


def bench_read(path: Path) -> dict[str, float]:
    out = {}
    for walk in ("c", "python"):
        os.environ["VMPROTO_DECODE_KERNEL"] = walk
        t = time.perf_counter()
        n = sum(len(b.frames) for b in CaptureFileReader(path))
        out[f"our reader, {walk} walk"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    with libpcap.PcapHandle.open_offline(path) as h:
        m = 0
        while (b := h.dispatch(4096)) is not None:
            m += len(b.frames)
    out["libpcap dispatch"] = m / (time.perf_counter() - t)
    t = time.perf_counter()
    with libpcap.PcapHandle.open_offline(path) as h:
        k = 0
        while (b := h.next_ex_batch(4096)) is not None and b.frames:
            k += len(b.frames)
    out["libpcap next_ex"] = k / (time.perf_counter() - t)
    assert n == m == k
    return out


def bench_decode(path: Path, kernel: str) -> tuple[float, float, int, Decoder]:
    """Return (packets per wall second, per CPU second, records, decoder) of read + decode of `path`."""
    os.environ["VMPROTO_DECODE_KERNEL"] = kernel  # the reader follows the decoder's choice
    dec = Decoder(kernel=kernel)
    t, c = time.perf_counter(), time.process_time()
    records = 0
    for b in CaptureFileReader(path):
        records += len(dec.decode_batch(b.linktype, b.ts_ns, b.frames))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    frames = dec.stats.get("frames")
    return frames / wall, frames / cpu, records, dec


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--packets", type=int, default=0, help="packets per scenario (overrides --quick)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario and decoder path (default 3)")
    ap.add_argument("--kernel", choices=["c", "python", "both"], default="both", help="decoder path(s) to run")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these scenarios")
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the plain run")
    args = ap.parse_args(argv)
    if args.packets < 0 or args.repeat < 1:
        ap.error("--packets must be >= 0 and --repeat >= 1")
    with BenchRun("decode", args) as run:
        _measure(run, args)
    return 0


def _measure(run: BenchRun, args: argparse.Namespace) -> None:
    n = args.packets or (100_000 if args.quick else 1_000_000)
    scenarios = args.scenario or (["plain", "gre", "vxlan"] if args.quick else list(SCENARIOS))
    kernels = ["c", "python"] if args.kernel == "both" else [args.kernel]
    with tempfile.TemporaryDirectory() as tmp:
        for name in scenarios:
            path = Path(tmp) / f"{name}.pcap"
            make_capture(path, n, SCENARIOS[name])
            if name == "plain" and not args.scenario:
                rates = bench_read(path)
                for reader, rate in rates.items():
                    print(f"read only   {reader:24s} {rate:12,.0f} packets/s")
                run.add_limit("libpcap_dispatch_read", rates["libpcap dispatch"], "packets/s",
                              f"libpcap pcap_dispatch over the plain capture ({n:,} packets), cffi callback")
                for reader in ("our reader, c walk", "our reader, python walk", "libpcap next_ex"):
                    key = "read_" + reader.replace("our reader, ", "ours_").replace(" ", "_")
                    run.figure(key, rates[reader], "packets/s", limit="libpcap_dispatch_read")
            for kernel in kernels:
                walls, cpus = [], []
                for _ in range(args.repeat):
                    wall, cpu, records, dec = bench_decode(path, kernel)
                    errors = dec.stats.total("error")
                    assert records == n and errors == 0, (records, errors)
                    walls.append(wall)
                    cpus.append(cpu)
                print(f"read+decode {name:8s} {kernel:6s}  wall best {max(walls):11,.0f} median "
                      f"{statistics.median(walls):11,.0f}   cpu best {max(cpus):11,.0f} median "
                      f"{statistics.median(cpus):11,.0f} packets/s  ({args.repeat} runs)")
                run.figure(f"decode_{name}_{kernel}_wall_best", max(walls), "packets/s")
                run.figure(f"decode_{name}_{kernel}_cpu_median", statistics.median(cpus), "packets/s",
                           note=f"{args.repeat} runs")
                if args.profile and name == "plain":
                    os.environ["VMPROTO_DECODE_KERNEL"] = kernel
                    prof = cProfile.Profile()
                    prof.enable()
                    bench_decode(path, kernel)
                    prof.disable()
                    s = io.StringIO()
                    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(8)
                    print("\n".join(s.getvalue().splitlines()[:22]))


if __name__ == "__main__":
    sys.exit(main())
