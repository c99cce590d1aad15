"""The chaos workload: a capture file of many generated calls and the CDRs our analyzer makes from it offline.

The offline analysis is the yardstick of every fault scenario: whatever the sensor and the central store in the
database must be exactly these CDRs (by `fbasename`, the Call-ID), each once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vmproto.config import defaults
from vmproto.sensor.app import analyzer_config, decode_options
from vmproto.sensor.calls import CallAnalyzer
from vmproto.sensor.capture.files import CaptureFileReader
from vmproto.sensor.capture.writer import PcapWriter
from vmproto.sensor.decode import Decoder
from vmproto.testing.callgen import CallSpec, generate_call

__all__ = ["Workload", "make_workload", "analyse_offline"]

_OUTCOMES = ("answered", "answered", "busy", "cancel")
_LINKTYPE_RAW = 101  # the generator produces IP packets


@dataclass(frozen=True)
class Workload:
    """A generated capture: `pcap`, its packet count, and `expected` (fbasename of every CDR the analyzer made)."""

    pcap: Path
    packets: int
    expected: frozenset[str]
    calls: int


def _spec(i: int, seed: int, t0: float, rtp_seconds: float) -> CallSpec:
    # A distinct caller address per call keeps the RTP of overlapping calls apart without port juggling.
    caller = bytes([10, 64 + (i >> 16) % 64, (i >> 8) & 0xFF, i & 0xFF or 1])
    return CallSpec(seed=seed * 1_000_003 + i, call_id=f"chaos-{seed}-{i}@10.0.0.1",
                    outcome=_OUTCOMES[i % len(_OUTCOMES)], rtp_seconds=rtp_seconds, start_s=t0 + i * 0.02,
                    caller_ip=caller, callee_ip=bytes([198, 51, 100, 20]), loss=0.01)


def make_workload(directory: Path, calls: int, *, seed: int = 1, rtp_seconds: float = 0.4) -> Workload:
    """Write `calls` generated calls to `directory`/calls-<seed>.pcap (time order) and analyse it offline.

    Calls start an hour ago (the central's daily partitions cover that) and overlap. Raises ValueError for
    `calls` < 1.
    """
    if calls < 1:
        raise ValueError("a workload needs at least one call")
    directory.mkdir(parents=True, exist_ok=True)
    t0 = float(int(time.time()) - 3600)
    packets = sorted((p for i in range(calls) for p in generate_call(_spec(i, seed, t0, rtp_seconds)).packets),
                     key=lambda p: p.ts_ns)
    path = directory / f"calls-{seed}.pcap"
    with open(path, "wb") as fh:
        writer = PcapWriter(fh, _LINKTYPE_RAW)
        for p in packets:
            writer.write(p.ts_ns, p.ip_packet)
        writer.close()
    expected = analyse_offline(path)
    return Workload(path, len(packets), frozenset(expected), calls)


def analyse_offline(pcap: Path) -> list[str]:
    """The fbasename of every CDR the sensor's own decoder and call analyzer make from `pcap` (default options),
    in closing order. Duplicates would show as repeated names."""
    cfg = defaults()
    decoder = Decoder(decode_options(cfg))
    names: list[str] = []
    analyzer = CallAnalyzer(analyzer_config(cfg), on_call_closed=lambda _call, cdr: names.append(cdr.fbasename))
    with CaptureFileReader(pcap) as reader:
        for batch in reader:
            for pkt in decoder.decode_batch(batch.linktype, batch.ts_ns, batch.frames):
                analyzer.feed(pkt)
    analyzer.finish()
    return names
